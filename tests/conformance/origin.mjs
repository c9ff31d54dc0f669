// Runs the http-cache-tests 0.4.5 origin server, bound to 127.0.0.1 only.
//
// server/server.mjs calls server.listen(port) without a host, which binds every
// interface. Patch listen() to add the loopback host for that one call shape, then
// load the package's server module unchanged.
//
// Node's other server defaults stay as they are, the 5 s keep-alive timeout included:
// some tests depend on it (headers-store-Transfer-Encoding sends a body delimited by
// the connection's close, which Node does when that timeout ends).
//
// usage: node origin.mjs PACKAGE_DIR
//   (the server reads npm_config_port, npm_config_protocol, npm_config_pidfile)
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const pkg = path.resolve(process.argv[2])
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args.length === 1 && ['number', 'string'].includes(typeof args[0])) {
    return listen.call(this, args[0], '127.0.0.1')
  }
  return listen.apply(this, args)
}
await import(pathToFileURL(path.join(pkg, 'server', 'server.mjs')).href)

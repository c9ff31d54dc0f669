// Loaded with `node --require` into the http-cache-tests 0.4.5 client (cli.mjs).
//
// The client uses node-fetch 2, which uses http.globalAgent. Since Node 19 that agent
// keeps connections alive, so after the suite's 3 s pauses the client can reuse a
// connection the proxy (gunicorn keepalive) is closing: "socket hang up" / ECONNRESET
// fails the test for a reason that has nothing to do with caching. One connection per
// request avoids the race.
const http = require('node:http')
http.globalAgent = new http.Agent({ keepAlive: false })

// Prints the http-cache-tests 0.4.5 test definitions as JSON, for scoring:
// [{id, tests: [{id, kind, depends_on, browser_only}]}].
//
// usage: node dump-tests.mjs PACKAGE_DIR
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const pkg = path.resolve(process.argv[2])
const load = async (name) =>
  (await import(pathToFileURL(path.join(pkg, 'tests', name)).href)).default
// cli.mjs runs the suites of tests/index.mjs plus surrogate-control.mjs; so do we.
const suites = [...(await load('index.mjs')), await load('surrogate-control.mjs')]
process.stdout.write(JSON.stringify(suites.map((suite) => ({
  id: suite.id,
  tests: suite.tests.map((test) => ({
    id: test.id,
    kind: test.kind || 'required',
    depends_on: test.depends_on || [],
    browser_only: test.browser_only === true
  }))
}))))

// The reference implementation for tests/test_mjml_reference.py: compiles MJML with the
// mjml npm package of web/frontend (a devDependency installed by `make vendor`).
// stdin: a JSON list of MJML sources; stdout: a JSON list of {html, errors}.
import { createRequire } from "node:module";

const require = createRequire(new URL("../web/frontend/package.json", import.meta.url));
const mjml = require("mjml");

let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).map((source) => {
  const compiled = mjml(source, { validationLevel: "soft", keepComments: true });
  return { html: compiled.html, errors: compiled.errors.map((e) => e.formattedMessage) };
});
process.stdout.write(JSON.stringify(results));

// Copies the browser builds of our npm dependencies into web/static/vendor/.
// Run by `make vendor` after `npm ci`; the output is gitignored, never committed.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static", "vendor");

// file in web/static/vendor/ → file in node_modules/
const FILES = {
  "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
  "chart.LICENSE.md": "chart.js/LICENSE.md",
  "codemirror.js": "codemirror/lib/codemirror.js",
  "codemirror.css": "codemirror/lib/codemirror.css",
  "codemirror-xml.js": "codemirror/mode/xml/xml.js",
  "codemirror.LICENSE": "codemirror/LICENSE",
  "dagre.min.js": "@dagrejs/dagre/dist/dagre.min.js",
  "dagre.min.js.map": "@dagrejs/dagre/dist/dagre.min.js.map",
  "dagre.LICENSE": "@dagrejs/dagre/LICENSE",
};

mkdirSync(out, { recursive: true });
for (const [target, source] of Object.entries(FILES)) {
  copyFileSync(join(here, "node_modules", source), join(out, target));
}
console.log(`vendor: ${Object.keys(FILES).length} files in ${out}`);

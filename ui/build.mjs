// Builds the console into dist/ (committed; the Go binary embeds it).
// The output depends on the sources and the locked packages only, so
// that `make ui` on any machine gives the same bytes (ui_test.go checks).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";

// The output folder: dist, or the first argument (ui_test.go builds
// into a temporary one to compare with the committed dist).
const out = process.argv[2] || "dist";
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  outfile: `${out}/app.js`,
  legalComments: "eof",
  logLevel: "warning",
});
copyFileSync("src/index.html", `${out}/index.html`);

#!/usr/bin/env node
// Runs the TypeScript sources through tsx in a clone; the compiled dist/ in the Docker image and
// the npm package, or in a clone with FAULTLINE_FROM_DIST=1 after `npm run build` (the bench runs
// what the package ships; tsx stays registered there so a TypeScript pipeline module still loads).
const fs = require('node:fs');
const path = require('node:path');

const src = path.join(__dirname, '..', 'src', 'cli', 'main.ts');
const dist = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
let cli;
if (process.env.FAULTLINE_FROM_DIST === '1') {
  if (!fs.existsSync(dist)) {
    console.error('error: FAULTLINE_FROM_DIST=1 but dist/ is not built: run npm run build');
    process.exit(1);
  }
  if (hasTsx()) require('tsx/cjs');
  cli = require(dist);
} else if (fs.existsSync(src) && hasTsx()) {
  require('tsx/cjs');
  cli = require(src);
} else {
  cli = require(dist);
}
cli.main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    console.error(`error: ${error && error.message ? error.message : String(error)}`);
    process.exitCode = 1;
  },
);

function hasTsx() {
  try {
    require.resolve('tsx/cjs');
    return true;
  } catch {
    return false;
  }
}

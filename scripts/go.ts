/** Building the stack's Go programs (Temporal's server and SQL tool, its Web UI server, MinIO) from their modules. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';

/** `go` from PATH, else the official tarball's place (/usr/local/go/bin), which shells often leave off PATH. */
export function goBinary(): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) if (dir && existsSync(path.join(dir, 'go'))) return path.join(dir, 'go');
  if (existsSync('/usr/local/go/bin/go')) return '/usr/local/go/bin/go';
  throw new Error('Go is needed to build MinIO and the Temporal server from their modules (https://go.dev/dl, or Debian: golang)');
}

/** `go install <pkg>@<version>` into `gobin`; a failure is one line with Go's last words. */
export function goInstall(pkgAtVersion: string, gobin: string): void {
  mkdirSync(gobin, { recursive: true });
  try {
    execFileSync(goBinary(), ['install', pkgAtVersion], { env: { ...process.env, GOBIN: gobin }, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    const detail = String((error as { stderr?: Buffer }).stderr ?? error)
      .trim()
      .split('\n')
      .slice(-2)
      .join(' ');
    throw new Error(`could not build ${pkgAtVersion} (is Go installed?): ${detail}`);
  }
}

// Fails when src/gen differs from what `npm run generate` makes from the
// protos now, so a proto change cannot land without its stubs.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const scratch = mkdtempSync(join(tmpdir(), "faultsvc-gen-"));
try {
  run("buf", ["generate", "--output", scratch]);
  const diff = run("diff", ["-ru", "src/gen", join(scratch, "src/gen")], {
    allowFailure: true,
  });
  if (diff !== 0) {
    console.error(
      "src/gen is out of date with the protos: run `npm run generate` and commit.",
    );
    process.exitCode = 1;
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

/**
 * @param {string} command
 * @param {string[]} args
 * @param {{ allowFailure?: boolean }} [options]
 * @returns {number}
 */
function run(command, args, { allowFailure = false } = {}) {
  const { status, error } = spawnSync(command, args, { stdio: "inherit" });
  if (error) {
    throw error;
  }
  if (status !== 0 && !allowFailure) {
    throw new Error(`${command} ${args.join(" ")} exited with ${status}`);
  }
  return status ?? 1;
}

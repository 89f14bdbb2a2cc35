// Starts a real `coffer serve` for a test: its own data dir, a free port, an admin key and
// a master key of its own. With COFFER_TEST_DATABASE_URL and COFFER_SDK_BACKEND=postgres
// it runs on a fresh PostgreSQL database (made with psql, named coffer_t_<pid>_sdk_<n> so
// scripts/test.sh drops it if the run dies) instead of SQLite.
//
// The binary is COFFER_BIN, else ${CARGO_TARGET_DIR:-../../target}/debug/coffer; a missing
// binary fails the test with a message saying how to build it.

import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");

export function cofferBinary() {
  const bin = process.env.COFFER_BIN
    ?? path.join(process.env.CARGO_TARGET_DIR ?? path.join(repo, "target"), "debug", "coffer");
  if (!existsSync(bin)) {
    throw new Error(`no coffer binary at ${bin}: run \`cargo build --bin coffer\` (or set COFFER_BIN)`);
  }
  return bin;
}

let databases = 0;

/** A running server: `{address, adminKey, api(method, path, body?), createKey(role, env?), stop()}`. */
export async function startServer({ env = {} } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "coffer-sdk-"));
  const adminKey = `ck_admin_${randomBytes(24).toString("hex")}`;
  const args = ["serve", "--listen", "127.0.0.1:0", "--data-dir", path.join(dir, "data")];
  let dropDatabase = () => {};
  if (process.env.COFFER_SDK_BACKEND === "postgres") {
    const base = process.env.COFFER_TEST_DATABASE_URL;
    if (!base) throw new Error("COFFER_SDK_BACKEND=postgres needs COFFER_TEST_DATABASE_URL");
    const name = `coffer_t_${process.pid}_sdk_${++databases}`;
    execFileSync("psql", [base, "-qc", `CREATE DATABASE ${name}`]);
    const url = new URL(base);
    url.pathname = `/${name}`;
    args.push("--database-url", url.toString());
    dropDatabase = () => {
      try { execFileSync("psql", [base, "-qc", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]); } catch { /* best effort */ }
    };
  }
  const child = spawn(cofferBinary(), args, {
    env: {
      PATH: process.env.PATH,
      HOME: dir,
      COFFER_ADMIN_KEY: adminKey,
      COFFER_MASTER_KEY: randomBytes(32).toString("hex"),
      RUST_LOG: "warn,coffer=info",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`coffer serve did not start:\n${log}`)), 30_000);
    const read = (chunk) => {
      log += chunk;
      const m = /coffer is listening addr=(\S+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(`http://${m[1]}`); }
    };
    child.stdout.setEncoding("utf8").on("data", read);
    child.stderr.setEncoding("utf8").on("data", read);
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`coffer serve exited (${code}):\n${log}`)); });
  });
  child.removeAllListeners("exit");

  async function api(method, p, body) {
    const response = await fetch(address + p, {
      method,
      headers: { authorization: `Bearer ${adminKey}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  return {
    address,
    adminKey,
    api,
    log: () => log,
    /** Creates an API key and returns its `{id, key}`. */
    async createKey(role, environment) {
      const { status, body } = await api("POST", "/v1/api-keys", { name: `${role} key`, role, environment });
      if (status !== 201) throw new Error(`creating a ${role} key: ${status} ${JSON.stringify(body)}`);
      return { id: body.id, key: body.key };
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      dropDatabase();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

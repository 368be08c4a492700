/**
 * scanblocker: watch an interface (or read a capture file), detect TCP port
 * scans, ban the scanners in the host firewall and export Prometheus metrics.
 * This file reads the settings, runs the command and owns the exit codes; the
 * daemon's wiring of the wings (capture → detect → bans/firewall → report) is
 * src/run/, its signals src/signals.ts. Exit codes: 0 normal end, 2 bad usage or
 * configuration, 1 any other fatal error.
 */
import { helpersNeedRaw, raiseAmbientCapabilities } from "./src/capabilities.ts";
import {
  type Config,
  ConfigError,
  formatSettings,
  loadConfig,
  readEnv,
  usage,
} from "./src/config.ts";
import { commandRefusal } from "./src/privilege.ts";
import { errorText, stdoutWrite, warn } from "./src/report/stdio.ts";
import { daemon } from "./src/run/daemon.ts";
import { quietSignals } from "./src/signals.ts";
import { VERSION } from "./src/version.ts";

/** The program version, from deno.json. */
export { VERSION };

/** Runs the program with these arguments and returns its exit code. */
export async function main(argv: string[]): Promise<number> {
  // No signal may end the daemon or open a debugger (see src/signals.ts).
  quietSignals();
  let cfg: Config;
  try {
    cfg = loadConfig(argv, readEnv());
  } catch (e) {
    if (e instanceof ConfigError) {
      warn(e.message);
      return 2;
    }
    throw e;
  }
  // Helpers inherit CAP_NET_ADMIN (and CAP_NET_RAW for the ipset form of
  // iptables: src/capabilities.ts) and nothing else, whatever the caller handed down.
  raiseAmbientCapabilities(helpersNeedRaw(cfg.firewall));
  const refusal = commandRefusal(cfg);
  if (refusal) {
    warn(refusal);
    return 2;
  }
  switch (cfg.command) {
    case "help":
      stdoutWrite(usage() + "\n");
      return 0;
    case "version":
      stdoutWrite(`scanblocker ${VERSION} (deno ${Deno.version.deno}, v8 ${Deno.version.v8})\n`);
      return 0;
    case "config":
      stdoutWrite(formatSettings(cfg));
      return 0;
    case "status": {
      // The subcommands' code is loaded when one runs (the daemon starts sooner).
      const { statusCommand } = await import("./src/report/control.ts");
      const r = await statusCommand(cfg.controlSocket, cfg.json);
      stdoutWrite(r.stdout);
      if (r.stderr) warn(r.stderr);
      return r.code;
    }
    case "bans":
    case "unban":
    case "flush": {
      const { runBansCommand } = await import("./src/bans/commands.ts");
      const out = await runBansCommand({ ...cfg, command: cfg.command });
      for (const line of out.stderr) warn(line);
      stdoutWrite(out.stdout);
      return out.code;
    }
    case "run":
      return await daemon(cfg, argv);
  }
}

if (import.meta.main) {
  let code = 1;
  try {
    code = await main(Deno.args);
  } catch (e) {
    warn(`fatal: ${errorText(e)}`);
  }
  Deno.exit(code);
}

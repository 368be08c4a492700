/**
 * What a live daemon checks before it touches anything: environment paths it
 * ignores (elevated), missing capabilities, one daemon per firewall, and the
 * interface. Each failure is configuration (exit 2: a restart would not
 * help), said in one line.
 */
import { capabilityAdvice, helpersNeedRaw, missingCapabilities } from "./capabilities.ts";
import { defaultInterface, interfaceProblem } from "./capture/capture.ts";
import type { Config } from "./config.ts";
import { type InstanceLock, lockFirewall } from "./instance.ts";
import { ignoredPathVariables } from "./privilege.ts";

/** The interface to capture on and the instance lock (held for the process's life), or an exit code. */
export type Preflight = { device: string; lock: InstanceLock | null } | { exit: number };

/** Runs the checks of the module comment; `warn` gets each line. */
export function preflight(cfg: Config, live: boolean, warn: (line: string) => void): Preflight {
  for (const name of ignoredPathVariables()) {
    warn(
      `${name} ignored: the program runs with capabilities its caller does not hold (run as root to use it)`,
    );
  }
  if (!live) return { device: "", lock: null };
  const advice = capabilityAdvice(missingCapabilities(helpersNeedRaw(cfg.firewall)), {
    firewall: cfg.firewall,
    live,
  });
  for (const line of advice) warn(line);
  if (advice.length > 0) return { exit: 2 };
  // One daemon per firewall (the kernel drops the lock when the process ends).
  const lock = cfg.firewall === "none" ? null : lockFirewall();
  if (lock && !lock.held) {
    warn("error" in lock ? lock.error : lock.warning);
    if ("error" in lock) return { exit: 2 };
  }
  let device: string;
  try {
    device = cfg.device ?? defaultInterface();
  } catch (e) {
    warn(e instanceof Error ? e.message : String(e));
    return { exit: 2 };
  }
  const problem = interfaceProblem(device);
  if (problem !== null) {
    warn(problem);
    return { exit: 2 };
  }
  return { device, lock };
}

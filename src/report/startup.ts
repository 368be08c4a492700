/** The start-up lines of a live run (stderr): what is watched, protected and where bans go. */
import { formatAddress } from "../address.ts";
import type { AllowList } from "../allowlist.ts";
import type { Config } from "../config.ts";

/** What the lines describe besides the configuration. */
export interface StartupFacts {
  device: string;
  allow: AllowList;
  /** Gateways and resolvers added by the lockout guard. */
  guarded: string[];
  /** Listening ports (null: --count-open-ports). */
  openPorts: number[] | null;
  /** The metrics URL actually listened on, or null. */
  metricsUrl: string | null;
  restored: number;
  /** How bans reach the kernel, e.g. "netlink"; empty for no firewall. */
  firewallPath: string;
  /** The speed bump: "on (…)" or "off (why)" (src/firewall/bump.ts). */
  bump: string;
  /** The capture thread's scheduling, e.g. "SCHED_FIFO 10" or "off (…)". */
  realtime: string;
  /** The firewall helpers by the absolute paths they were resolved to (src/firewall/helpers.ts). */
  helpers: string[];
}

/** One line each, without the "scanblocker: " prefix. */
export function startupLines(cfg: Config, f: StartupFacts): string[] {
  const lines = [
    `Listening on: ${f.device} (snaplen ${cfg.snaplen}, buffer ${cfg.bufferSize} bytes, firewall ${cfg.firewall}${
      f.firewallPath ? ` via ${f.firewallPath}` : ""
    }, ${f.restored} bans restored)`,
    `localIPs: ${cfg.local ? "" : "(all interfaces) "}${f.allow.localText.join(" ")}`,
  ];
  lines.push(`speed bump: ${f.bump}`);
  if (cfg.allow.length > 0) {
    lines.push(
      `allow-list: ${
        cfg.allow.map((c) => `${formatAddress(c.family, c.bytes)}/${c.prefix}`).join(" ")
      }`,
    );
  }
  if (f.guarded.length > 0) {
    lines.push(
      `lockout guard (never banned; --lockout-guard off to disable): ${f.guarded.join(" ")}`,
    );
  }
  if (f.openPorts) {
    lines.push(
      `open ports (SYNs to them are not probes; --count-open-ports counts them): ${
        f.openPorts.join(" ") || "none"
      }`,
    );
  }
  if (cfg.realtime > 0) {
    lines.push(
      `capture thread: ${f.realtime}${
        f.realtime.startsWith("off")
          ? " (grant CAP_SYS_NICE for the fastest bans; --realtime 0 to silence this)"
          : " (--realtime 0 for normal scheduling)"
      }`,
    );
  }
  if (f.helpers.length > 0) lines.push(`helpers: ${f.helpers.join(" ")}`);
  if (f.metricsUrl) lines.push(`metrics: ${f.metricsUrl}`);
  return lines;
}

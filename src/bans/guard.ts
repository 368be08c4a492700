/**
 * The guard in front of every ban: who this host is and who is never
 * banned. --allow blocks, this host's addresses (every interface, or
 * --local), and the lockout guard's gateways and resolvers, so a spoofed
 * probe cannot cut the host off its network.
 */
import { parseCidr } from "../address.ts";
import { AllowList, interfaceAddresses } from "../allowlist.ts";
import type { Config } from "../config.ts";
import { lockoutGuard } from "../lockout.ts";

/** The allow-list of a run, and the addresses the lockout guard added (for the start-up line). */
export function protectedAddresses(
  cfg: Pick<Config, "allow" | "local" | "lockoutGuard">,
  live: boolean,
  warn: (line: string) => void,
): { allow: AllowList; guarded: string[] } {
  const allow = new AllowList([...cfg.allow]);
  if (cfg.local) allow.setLocal(cfg.local);
  else if (live) allow.setLocal(interfaceAddresses());
  const guarded: string[] = [];
  if (live && cfg.lockoutGuard) {
    try {
      const g = lockoutGuard();
      for (const a of [...g.gateways, ...g.resolvers]) {
        const c = parseCidr(a);
        if (c) {
          allow.addAllowed([c]);
          guarded.push(a);
        }
      }
    } catch (e) {
      warn(`cannot read gateways/resolvers: ${e instanceof Error ? e.message : e}`);
    }
  }
  return { allow, guarded };
}

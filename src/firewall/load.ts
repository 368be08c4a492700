/**
 * The daemon's way to a backend: createFirewall, with the backends' code
 * (netlink, iptables, nftables, ipset: ~25 modules) loaded only when one is
 * chosen. An offline run bans nowhere (`none`) and starts ~20 ms sooner.
 */
import type { Firewall, FirewallKind } from "../types.ts";
import { type FirewallOptions, withDefaults } from "./base.ts";
import { NoneFirewall } from "./none.ts";

/** The backend named by `kind` (see createFirewall in ./firewall.ts). */
export async function loadFirewall(kind: FirewallKind, opts: FirewallOptions): Promise<Firewall> {
  if (kind === "none") return new NoneFirewall(withDefaults(opts));
  return (await import("./firewall.ts")).createFirewall(kind, opts);
}

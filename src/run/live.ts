/**
 * The live run on the main thread, once the set-up is done: the control
 * socket, the start-up lines, the capture thread started with the bans
 * owner's fast path, the fleet, and the once-a-second tick until a stop
 * signal or a capture error.
 */
import type { AllowList } from "../allowlist.ts";
import type { Bans } from "../bans/bans.ts";
import type { GuardWatch } from "../bans/guard.ts";
import { HostWatch } from "../capture/host.ts";
import type { LiveCapture } from "../capture/live.ts";
import type { Config } from "../config.ts";
import { Slot } from "../detect/counters.ts";
import { resolvedHelpers } from "../firewall/helpers.ts";
import { joinFleet } from "../fleet/join.ts";
import type { RunningFleet } from "../fleet/wire.ts";
import type { OpenPorts } from "../openports.ts";
import { startControlServer } from "../report/control.ts";
import type { EventLog } from "../report/log.ts";
import type { Reporting } from "../report/reporting.ts";
import { startupLines } from "../report/startup.ts";
import { StatusRecorder, takeSnapshot } from "../report/status.ts";
import { errorText, notice, warn } from "../report/stdio.ts";
import { keepSigusr1Ignored, type StopSignals, stopSignals } from "../signals.ts";
import type { Firewall } from "../types.ts";
import { VERSION } from "../version.ts";
import { BumpSync } from "./bump.ts";

/** What the live run needs from the set-up. */
export interface LiveRun {
  device: string;
  allow: AllowList;
  guarded: string[];
  guard: GuardWatch | null;
  openPorts: OpenPorts | null;
  log: EventLog;
  reports: Reporting;
  restored: number;
  firewallPath: string;
  /** The firewall, whose speed bump the run keeps in step with the settings. */
  fw: Firewall;
  /** Hands the fleet link (if any) back to the set-up, for /healthz and the end. */
  joined: (fleet: RunningFleet | null) => void;
  /** SIGHUP: re-read the settings and apply what can change while running. */
  reload: () => Promise<void>;
}

/** Runs the live capture to its end; returns the exit code. */
export async function runLive(cfg: Config, c: LiveCapture, b: Bans, o: LiveRun): Promise<number> {
  const stop = stopSignals(o.reload); // before anything is printed: a SIGTERM now ends cleanly
  keepSigusr1Ignored(); // for the life of the process (see quietSignals)
  // The last scans, for `scanblocker status` (the bans owner's book keeps the bans).
  const recorder = new StatusRecorder();
  c.onScans = (notices) => {
    for (const n of notices) {
      const { ms: at, src, dst, slow, ports } = n.scan;
      recorder.scan({ at, src, dst, rule: slow ? "slow" : cfg.detector, ports: ports.length });
      b.onScan(n.scan, n);
    }
    o.log.flush();
  };
  c.onWarning = warn;
  // Before the start-up lines: once they are out, `status` answers.
  const control = await startControlServer(cfg.controlSocket, () =>
    takeSnapshot({
      version: VERSION,
      startedAt: performance.timeOrigin,
      interface: o.device,
      firewall: () => ({ backend: cfg.firewall, path: o.firewallPath, state: b.state }),
      packets: () => ({
        seen: c.counter(Slot.Packets),
        droppedByKernel: c.counter(Slot.PcapDropped),
      }),
      sources: () => ({ tracked: c.counter(Slot.TrackedSources), cap: cfg.maxSources }),
      top: (n) => c.top(n),
      bans: () => b.entries(),
      recorder,
    }), warn).catch((e) => {
      warn(`${errorText(e)}; \`scanblocker status\` will not work`);
      return null;
    });
  o.guard?.attach(c);
  const host = new HostWatch(c, o.allow, o.openPorts, cfg.local !== null, warn);
  const server = o.reports.server;
  const sync = new BumpSync(o.fw, cfg, o.device, o.allow, () => o.openPorts?.list() ?? [], warn);
  const bump = await sync.sync();
  // The capture thread warmed up meanwhile (or ended: untilStopped reports it).
  await c.ready;
  const lines = startupLines(cfg, {
    device: o.device,
    allow: o.allow,
    guarded: o.guarded,
    openPorts: o.openPorts ? host.open : null,
    metricsUrl: server ? `http://${server.address}/metrics` : null,
    restored: o.restored,
    firewallPath: o.firewallPath,
    bump,
    realtime: c.realtime,
    helpers: resolvedHelpers(),
  });
  for (const line of lines) notice(line);
  const start = b.attachCapture(c);
  c.start(start.banned, start.fast);
  const metrics = o.reports.metrics;
  o.joined(joinFleet(cfg, { bans: b, allow: o.allow, metrics, warn, version: VERSION }));
  const code = await untilStopped(c, stop, () => {
    o.log.flush(Date.now());
    host.tick();
    o.guard?.tick();
    b.tick();
    sync.tick();
    o.reports.tick();
  });
  await control?.close();
  return code;
}

/** Runs the live capture until a stop signal or a capture error, calling `tick` once a second. */
async function untilStopped(
  capture: LiveCapture,
  stop: StopSignals,
  tick: () => void,
): Promise<number> {
  const timer = setInterval(tick, 1000);
  let code = 0;
  const error = await Promise.race([capture.ended, stop.wanted.then(() => null)]);
  if (error !== null && !stop.stopped()) {
    warn(error);
    code = 1;
  }
  clearInterval(timer);
  await stop.remove();
  const last = await capture.stop();
  if (last !== null && code === 0 && error === null) {
    warn(last);
    code = 1;
  }
  return code;
}

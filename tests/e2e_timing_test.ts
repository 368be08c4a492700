/**
 * The JSON "banned" event of a ban made by the capture thread says where the
 * time went, from the threshold packet's capture timestamp: waiting in the
 * ring until the thread read it (capture_to_read_ms: the machine giving the
 * thread a CPU), to the detection, to the kernel's confirmation. The three
 * figures are ordered, so the bench can tell scheduling from our own work.
 */
import assert from "node:assert/strict";
import { startDaemon } from "./daemon.ts";
import { canUseNetns, createLab, nmap } from "./netns.ts";

const root = await canUseNetns();

Deno.test({
  name: "banned event: capture → read → detection → ban, each a figure, in order",
  ignore: !root,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const lab = await createLab("tim");
    const d = startDaemon(lab.target, [
      "-i",
      lab.targetIf,
      "--firewall",
      "nftables",
      "--log-format",
      "json",
      "--metrics-addr",
      "off",
    ]);
    try {
      await d.waitFor(/Listening on: /, 20000);
      await nmap(lab, ["-sS", "-p", "1-30", lab.target4]);
      await d.waitFor(/"event":"banned"/, 10000);
      const e = d.stdout().split("\n").filter((l) => l.includes('"event":"banned"'))
        .map((l) => JSON.parse(l))[0];
      assert.equal(e.address, lab.scanner4);
      const { capture_to_read_ms: read, capture_to_detection_ms: det } = e;
      const ban = e.detection_to_ban_ms;
      for (const x of [read, det, ban]) assert.equal(typeof x, "number", JSON.stringify(e));
      assert.ok(0 <= read && read <= det && det <= ban, JSON.stringify(e));
    } finally {
      await d.stop();
      await lab.destroy();
    }
  },
});

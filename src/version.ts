/** The program version, from deno.json (one place: --version, metrics, status, the fleet). */
import denoJson from "../deno.json" with { type: "json" };

export const VERSION: string = denoJson.version;

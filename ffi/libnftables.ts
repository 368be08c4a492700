/**
 * libnftables (the library behind `nft`, package nftables) bound with
 * Deno.dlopen: commands run in this process, in its network namespace, with
 * no child process and no pipe in between. A zero return of
 * `nft_run_cmd_from_buffer` means the kernel applied the whole transaction;
 * anything else comes with the error text nft would have printed. Pointers
 * never leave this module: callers get NftContext.
 */
import { readCString } from "./cstring.ts";
import { trustedPathVariable } from "./libc.ts";
import { openLibrary } from "./loader.ts";

/** Library names tried when `SB_LIBNFTABLES` is not set. */
const NFT_NAMES = ["libnftables.so.1"];

/** `nft_ctx_output_set_flags` bit: JSON output (NFT_CTX_OUTPUT_JSON). */
const OUTPUT_JSON = 1 << 4;

/** libnftables symbols, each with its C prototype. */
export const nftSymbols = {
  /** struct nft_ctx *nft_ctx_new(uint32_t flags); */
  nft_ctx_new: { parameters: ["u32"], result: "pointer" },
  /** void nft_ctx_free(struct nft_ctx *ctx); */
  nft_ctx_free: { parameters: ["pointer"], result: "void" },
  /** int nft_ctx_buffer_output(struct nft_ctx *ctx); */
  nft_ctx_buffer_output: { parameters: ["pointer"], result: "i32" },
  /** int nft_ctx_buffer_error(struct nft_ctx *ctx); */
  nft_ctx_buffer_error: { parameters: ["pointer"], result: "i32" },
  /** const char *nft_ctx_get_output_buffer(struct nft_ctx *ctx); (returns and resets) */
  nft_ctx_get_output_buffer: { parameters: ["pointer"], result: "pointer" },
  /** const char *nft_ctx_get_error_buffer(struct nft_ctx *ctx); (returns and resets) */
  nft_ctx_get_error_buffer: { parameters: ["pointer"], result: "pointer" },
  /** unsigned int nft_ctx_output_get_flags(struct nft_ctx *ctx); */
  nft_ctx_output_get_flags: { parameters: ["pointer"], result: "u32" },
  /** void nft_ctx_output_set_flags(struct nft_ctx *ctx, unsigned int flags); */
  nft_ctx_output_set_flags: { parameters: ["pointer", "u32"], result: "void" },
  /** int nft_run_cmd_from_buffer(struct nft_ctx *nft, const char *buf); */
  nft_run_cmd_from_buffer: { parameters: ["pointer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type NftLib = Deno.DynamicLibrary<typeof nftSymbols>;
let lib: NftLib | null = null;

/**
 * Opens libnftables once ($SB_LIBNFTABLES alone when set and the process is
 * not elevated, else the soname); throws an Error listing every name tried.
 */
export function loadLibnftables(): NftLib {
  lib ??= openLibrary({
    what: "libnftables",
    names: NFT_NAMES,
    override: { variable: "SB_LIBNFTABLES", value: trustedPathVariable("SB_LIBNFTABLES") },
    install: `Debian/Ubuntu "apt-get install libnftables1", Fedora/RHEL "dnf install nftables"`,
  }, nftSymbols).lib;
  return lib;
}

/** Outcome of one command buffer. */
export interface NftRunResult {
  /** True when nft accepted the buffer and the kernel applied it. */
  ok: boolean;
  /** What nft wrote to its error stream (empty on success, as a rule). */
  error: string;
  /** What nft wrote to its output stream (listings). */
  output: string;
}

const enc = new TextEncoder();

/** One libnftables context with output and errors captured into buffers. */
export class NftContext {
  #ctx: Deno.PointerValue;
  readonly #lib: NftLib;
  #json = false;

  /** Opens the library and a context; throws when either fails. */
  constructor() {
    this.#lib = loadLibnftables();
    const ctx = this.#lib.symbols.nft_ctx_new(0);
    if (ctx === null) throw new Error("nft_ctx_new failed");
    const s = this.#lib.symbols;
    if (s.nft_ctx_buffer_output(ctx) !== 0 || s.nft_ctx_buffer_error(ctx) !== 0) {
      s.nft_ctx_free(ctx);
      throw new Error("nft_ctx_buffer_output/error failed");
    }
    this.#ctx = ctx;
  }

  /** Runs one buffer of nft commands (one transaction); JSON output when `json` is set. */
  run(cmd: string, json = false): NftRunResult {
    const ctx = this.#ctx;
    if (ctx === null) return { ok: false, error: "libnftables context closed", output: "" };
    const s = this.#lib.symbols;
    if (json !== this.#json) {
      const flags = s.nft_ctx_output_get_flags(ctx);
      s.nft_ctx_output_set_flags(ctx, json ? flags | OUTPUT_JSON : flags & ~OUTPUT_JSON);
      this.#json = json;
    }
    const rc = s.nft_run_cmd_from_buffer(ctx, enc.encode(cmd + "\0"));
    // Both getters also reset their buffer for the next command.
    const output = readCString(s.nft_ctx_get_output_buffer(ctx));
    const error = readCString(s.nft_ctx_get_error_buffer(ctx));
    return { ok: rc === 0, error, output };
  }

  /** Frees the context; later runs fail with "closed". Safe to call twice. */
  close(): void {
    const ctx = this.#ctx;
    this.#ctx = null;
    if (ctx !== null) this.#lib.symbols.nft_ctx_free(ctx);
  }
}

/**
 * C strings at the FFI boundary, for every binding: text to a NUL-terminated
 * buffer, a `char *` (or a fixed error buffer) back to text. Pointers given
 * here are read at once and never kept.
 */
const enc = new TextEncoder();
const dec = new TextDecoder();

/** `s` as a NUL-terminated UTF-8 buffer, for a `const char *` parameter. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  return enc.encode(s + "\0");
}

/** The text a `char *` points to; "" for NULL. */
export function readCString(p: Deno.PointerValue): string {
  return p ? Deno.UnsafePointerView.getCString(p) : "";
}

/** The text in a fixed-size C buffer up to its first NUL (e.g. libpcap's errbuf), trimmed. */
export function bufferText(buf: Uint8Array): string {
  const end = buf.indexOf(0);
  return dec.decode(buf.subarray(0, end < 0 ? buf.length : end)).trim();
}

// SMS segment counter (R26): GSM-7 when every character is in the GSM 03.38 basic
// set or its extension table, otherwise UCS-2.
// GSM-7: 160 septets in one message, 153 per part; extension characters
// (^ { } \ [ ~ ] | € and form feed) take two. UCS-2 counts UTF-16 code units:
// 70 in one message, 67 per part.

const GSM_BASIC =
  "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
  "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENSION = "^{}\\[~]|€\f";

const BASIC = new Set(GSM_BASIC);
const EXTENSION = new Set(GSM_EXTENSION);

/**
 * @returns {{encoding: "GSM-7"|"UCS-2", length: number, segments: number, perSegment: number, remaining: number}}
 * length is in septets (GSM-7) or UTF-16 code units (UCS-2).
 */
export function countSegments(text) {
  text = String(text ?? "");
  let septets = 0;
  let gsm = true;
  for (const ch of text) {
    if (BASIC.has(ch)) septets += 1;
    else if (EXTENSION.has(ch)) septets += 2;
    else {
      gsm = false;
      break;
    }
  }
  const encoding = gsm ? "GSM-7" : "UCS-2";
  const length = gsm ? septets : text.length; // JS string length = UTF-16 code units
  const single = gsm ? 160 : 70;
  const multi = gsm ? 153 : 67;
  let segments;
  if (length === 0) segments = 0;
  else if (length <= single) segments = 1;
  else segments = Math.ceil(length / multi);
  const perSegment = segments > 1 ? multi : single;
  const capacity = Math.max(segments, 1) * perSegment;
  return { encoding, length, segments, perSegment, remaining: capacity - length };
}

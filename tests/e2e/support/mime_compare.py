"""Independent comparison for tests/corpus_fidelity.rs (issue 17): is the content that openssl
and gpg opened from a sealed copy the same message as the original, as Python's `email`
package (not sealgate's parser) sees them?

    python3 tests/e2e/support/mime_compare.py WORKDIR [EXPLAINED_DIR...]

WORKDIR holds one directory per corpus message with `original.eml` and, per sealed form F
(`smime`, `pgp`, `clear`), `F.sealed` (the outgoing message) and `F.inner` (what openssl / gpg
returned after decrypting and verifying). For every form it checks:

- the outer header of the sealed copy: every field of the original but Bcc, Resent-Bcc,
  MIME-Version and Content-*, in order, with the same unfolded value;
- the protected copies in the inner entity (RFC 9788): the same values, in order;
- the MIME tree: same content types and parameters (the top-level `hp` parameter aside), same
  header fields on every part (Content-Transfer-Encoding aside), same number of parts, same
  preamble and epilogue, and for every leaf the same decoded octets (line ends normalised for
  text, the one change RFC 5322 transport makes anyway).

A changed Content-Transfer-Encoding with the same decoded content is a repair, not a
difference: they are counted with their reason. Differences in the EXPLAINED_DIR messages (the
Rust test says why) are printed as EXPLAINED; such a message without any difference is an error
(the list must not go stale). Prints one line per difference and a summary; exits 1 if there is
any unexplained difference.
"""
from __future__ import annotations

import email
import email.policy
import re
import sys
from collections import Counter
from pathlib import Path

PROTECTED = ["from", "sender", "reply-to", "to", "cc", "date", "message-id", "subject",
             "in-reply-to", "references", "keywords", "comments"]
HP = re.compile(r';\s*hp="(cipher|clear)"\s*$')


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def unfold(value) -> str:
    return re.sub(r"\r?\n", "", str(value)).strip()


def lines(text) -> bytes:
    if text is None:
        return b""
    if isinstance(text, str):
        text = text.encode("ascii", "surrogateescape")
    return text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def cte(part) -> str:
    return unfold(part.get("content-transfer-encoding", "")).lower()


class Compare:
    def __init__(self, name: str, form: str):
        self.name, self.form = name, form
        self.diffs: list[str] = []
        self.repairs: Counter = Counter()

    def diff(self, path: str, what: str) -> None:
        self.diffs.append(f"{self.name} [{self.form}] {path or '/'}: {what}")

    def fields(self, path, a, b, skip, top=False) -> None:
        fa = [(k.lower(), unfold(v)) for k, v in a.items() if k.lower() not in skip]
        fb = [(k.lower(), unfold(v)) for k, v in b.items() if k.lower() not in skip]
        if top:
            fb = [(k, HP.sub("", v)) if k == "content-type" else (k, v) for k, v in fb]
            if "content-type" not in {k for k, _ in fa}:
                # No Content-Type: sealgate writes the RFC 2045 default explicitly.
                fb = [f for f in fb if f != ("content-type", "text/plain; charset=us-ascii")]
        if fa != fb:
            self.diff(path, f"header fields differ:\n    original {fa}\n    opened   {fb}")

    def tree(self, a, b, path: str, top: bool) -> None:
        if a.get_content_type() != b.get_content_type():
            self.diff(path, f"type {a.get_content_type()} became {b.get_content_type()}")
            return
        if top:
            self.fields(path, a, b, {"content-transfer-encoding", "mime-version"} |
                        {k.lower() for k in a.keys() if not k.lower().startswith("content-")} |
                        {k.lower() for k in b.keys() if not k.lower().startswith("content-")},
                        top=True)
        else:
            self.fields(path, a, b, {"content-transfer-encoding"})
        if a.is_multipart() != b.is_multipart():
            self.diff(path, "multipart became a leaf or the reverse")
            return
        if a.is_multipart():
            if lines(a.preamble) != lines(b.preamble):
                self.diff(path, f"preamble {a.preamble!r} became {b.preamble!r}")
            if lines(a.epilogue) != lines(b.epilogue):
                self.diff(path, f"epilogue {a.epilogue!r} became {b.epilogue!r}")
            pa, pb = a.get_payload(), b.get_payload()
            if len(pa) != len(pb):
                self.diff(path, f"{len(pa)} parts became {len(pb)}")
                return
            for i, (x, y) in enumerate(zip(pa, pb)):
                if a.get_content_maintype() == "message":
                    # An embedded message: its whole header is content.
                    self.fields(f"{path}/msg", x, y, {"content-transfer-encoding"})
                self.tree(x, y, f"{path}/{i + 1}", top=False)
            if cte(a) != cte(b):
                self.repairs[f"composite {cte(a) or '(none)'} -> {cte(b) or '(none)'}"] += 1
            return
        da, db = a.get_payload(decode=True), b.get_payload(decode=True)
        text = a.get_content_maintype() == "text"
        same = lines(da) == lines(db) if text else da == db
        if not same:
            self.diff(path, f"decoded content differs ({cte(a) or 'none'} -> {cte(b) or 'none'}, "
                            f"{len(da or b'')} -> {len(db or b'')} octets)")
        elif cte(a) != cte(b):
            self.repairs[f"leaf {cte(a) or '(none)'} -> {cte(b)}"] += 1


def compare(name: str, original: bytes, sealed: bytes, inner: bytes, form: str) -> Compare:
    c = Compare(name, form)
    o, s, i = parse(original), parse(sealed), parse(inner)
    outer_skip = {"bcc", "resent-bcc", "mime-version"}
    exp = [(k.lower(), unfold(v)) for k, v in o.items()
           if k.lower() not in outer_skip and not k.lower().startswith("content-")]
    got = [(k.lower(), unfold(v)) for k, v in s.items()
           if k.lower() not in outer_skip and not k.lower().startswith("content-")]
    if exp != got:
        c.diff("outer", f"outer header differs:\n    original {exp}\n    sealed   {got}")
    prot_o = [(k, v) for k, v in exp if k in PROTECTED]
    prot_i = [(k.lower(), unfold(v)) for k, v in i.items() if k.lower() in PROTECTED]
    if prot_o != prot_i:
        c.diff("inner", f"protected copies differ:\n    original {prot_o}\n    inner    {prot_i}")
    c.tree(o, i, "", top=True)
    return c


def main() -> int:
    work = Path(sys.argv[1])
    explained = set(sys.argv[2:])
    diffs: list[str] = []
    repairs: Counter = Counter()
    compared = Counter()
    differing: set[str] = set()
    for d in sorted(p for p in work.iterdir() if p.is_dir()):
        original = (d / "original.eml").read_bytes()
        for form in ("smime", "pgp", "clear"):
            sealed, inner = d / f"{form}.sealed", d / f"{form}.inner"
            if not sealed.exists() or not inner.exists():
                continue  # refused, or failed to open (the Rust test reports that)
            c = compare(d.name, original, sealed.read_bytes(), inner.read_bytes(), form)
            compared[form] += 1
            if c.diffs:
                differing.add(d.name)
            for line in c.diffs:
                print("EXPLAINED" if d.name in explained else "DIFF", line)
            diffs.extend(x for x in c.diffs if d.name not in explained)
            repairs.update({f"{form}: {k}": v for k, v in c.repairs.items()})
    stale = sorted(explained - differing)
    for name in stale:
        print("STALE explained difference, none found:", name)
    for what, n in sorted(repairs.items()):
        print(f"repaired {n:4d} x {what}")
    print(f"compared: {dict(compared)}; unexplained differences: {len(diffs)}; "
          f"explained: {len(explained & differing)} messages")
    return 1 if diffs or stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate a large synthetic CA corpus (real DER certificates) for benchmarks, quickly.

Signing 100,000 certificates with a fresh key each is slow, so leaf keys come from a small pool;
the certificates themselves are all distinct, with realistic names and some planted typos.
"""

from __future__ import annotations

import random
import string
import sys
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

# the throwaway CA lives with the tests (it is no part of the scanner's API); the checkout's root on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.synth import TestCA, der, new_key, utc  # noqa: E402


def random_label(rng: random.Random) -> str:
    """A plausible registrable label (5-14 letters, sometimes a hyphen)."""
    n = rng.randint(5, 14)
    label = "".join(rng.choice(string.ascii_lowercase) for _ in range(n))
    if n > 8 and rng.random() < 0.2:
        cut = rng.randint(3, n - 3)
        label = label[:cut] + "-" + label[cut:]
    return label


def make_corpus(
    n_certs: int, n_domains: int, seed: int = 1, unregistered_share: float = 0.01
) -> tuple[TestCA, list[bytes], x509.CertificateRevocationList]:
    """n_certs DER certificates over about n_domains registrable domains, and a CRL revoking ~2%.

    Labels of domains meant to be registered start with "r", the others (unregistered_share of them)
    with "u": the loopback RDAP registry of bench_registration answers 200 and 404 by that letter.
    """
    rng = random.Random(seed)
    ca = TestCA(name="ctscan Benchmark CA")
    keys = [new_key() for _ in range(32)]
    tlds = ["com", "net", "org", "es", "de", "co.uk", "fr", "io"]
    domains = [f"{'u' if rng.random() < unregistered_share else 'r'}{random_label(rng)}.{rng.choice(tlds)}"
               for _ in range(n_domains)]
    start = utc("2023-01-01T00:00")
    ders: list[bytes] = []
    revoked = []
    for i in range(n_certs):
        dom = domains[i % n_domains] if i < n_domains else rng.choice(domains)
        names = [dom, "www." + dom]
        if rng.random() < 0.05:
            names.append("mail." + rng.choice(domains))
        nb = start + timedelta(minutes=7 * i)
        cert = ca.issue(serial=0x100000 + i, not_before=nb, cn=names[0], org=dom.split(".")[0].upper() + " S.L.",
                        dns=names, key=keys[i % len(keys)])
        ders.append(der(cert))
        if rng.random() < 0.02:
            revoked.append((0x100000 + i, nb + timedelta(hours=rng.randint(1, 400)), None))
    crl = ca.crl(revoked, this_update=start + timedelta(minutes=7 * n_certs))
    return ca, ders, crl


def write_corpus(out: Path, n_certs: int, n_domains: int, bundles: bool = False) -> tuple[Path, Path]:
    """Write the corpus as DER files in 100 folders (or PEM bundles of 10,000), and its CRL; (cert dir, crl)."""
    _, ders, crl = make_corpus(n_certs, n_domains)
    certs = out / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    if bundles:
        for start in range(0, len(ders), 10_000):
            pems = (x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM) for d in ders[start:start + 10_000])
            (certs / f"bundle-{start // 10_000:04d}.pem").write_bytes(b"".join(pems))
    for i, d in enumerate([] if bundles else ders):
        folder = certs / f"{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.der").write_bytes(d)
    crl_path = out / "ca.crl"
    crl_path.write_bytes(der(crl))
    return certs, crl_path

#!/usr/bin/python3
"""Inside a test host: COUNT lineages under DIR/live/dN, as certbot lays them out, with names
dN.bulk.test and mail.dN.bulk.test: a P-256 key and a leaf signed by one throwaway CA each (the CA
in DIR/bulk-ca-FIRST.pem).
Python's cryptography (a dependency of Debian's certbot) makes thousands a minute; openssl forks don't.

    make-lineages.py COUNT DIR [FIRST]
"""

import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def main() -> None:
    count, directory = int(sys.argv[1]), sys.argv[2]
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("bulk-ca"))
        .issuer_name(name("bulk-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"bulk-ca-{first}.pem"), "wb") as handle:  # for verify --ca-file
        handle.write(ca_pem)
    for index in range(first, first + count):
        key = ec.generate_private_key(ec.SECP256R1())
        names = [f"d{index}.bulk.test", f"mail.d{index}.bulk.test"]
        leaf = (
            x509.CertificateBuilder()
            .subject_name(name(names[0]))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=60))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        live = os.path.join(directory, "live", f"d{index}")
        os.makedirs(live, exist_ok=True)
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        descriptor = os.open(os.path.join(live, "privkey.pem"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(key_pem)
        for file_name, data in (
            ("cert.pem", leaf_pem),
            ("chain.pem", ca_pem),
            ("fullchain.pem", leaf_pem + ca_pem),
        ):
            with open(os.path.join(live, file_name), "wb") as handle:
                handle.write(data)


if __name__ == "__main__":
    main()

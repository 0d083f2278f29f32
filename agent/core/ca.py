"""The per-machine CA that intercept mode signs provider-host certificates with.

Pure: builds the key and certificate in memory; agent/trustca.py writes them
(0600) and installs the certificate in the OS trust stores. The name carries
the product and the machine so a user who finds it in a trust store knows
what put it there; the key never leaves the machine it was made on.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

PRODUCT = "Governor"
VALID_DAYS = 3650


@dataclass(frozen=True, slots=True)
class CA:
    key_pem: bytes
    cert_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def common_name(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    @property
    def fingerprint_sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex(":").upper()


def common_name(machine: str) -> str:
    return f"{PRODUCT} local CA ({machine})"[:64]  # X.509 caps CN at 64 characters


def generate(machine: str, now: datetime.datetime | None = None, key_size: int = 2048) -> CA:
    """A new CA: `Governor local CA (<machine>)`, O=Governor, ten years."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name(machine)),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, PRODUCT),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"intercept mode on {machine}"[:64]),
    ])  # fmt: skip
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return CA(key_pem, cert.public_bytes(serialization.Encoding.PEM))

"""The `pii` op: tricky positives and negatives per type, counts, placeholders, config checks."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from curation.operator import get_op
from curation.pii import Pii, PiiConfig, redact

COUNT_COLUMNS = ("pii.email", "pii.ip", "pii.phone", "pii.url_credentials")


def run(texts, **config):
    op = Pii(PiiConfig(**config))
    op.setup()
    column = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, pa.string())
    decision = op.process(pa.table({"text": column, "doc_id": pa.array(range(len(column)), pa.int64())}))
    assert decision.table.num_rows == len(column)
    assert decision.keep is None and decision.reason is None  # never drops
    return decision.table


def one(text: str, **config) -> str:
    return redact(text, PiiConfig(**config))[0]


@pytest.mark.parametrize("text, expected", [
    ("Write to john.doe+news@mail.example.co.uk today.", "Write to <EMAIL> today."),
    ("JANE_O'Neil@Sub.Example.COM.", "JANE_O'<EMAIL>."),  # an apostrophe is not in the local part
    ("mailto:info@example.org, <bob@example.io>", "mailto:<EMAIL>, <<EMAIL>>"),
    ("josé.núñez@correo.example.es", "<EMAIL>"),
    ("https://example.com/contact?to=anna@example.com", "https://example.com/contact?to=<EMAIL>"),
])
def test_email_positives(text, expected):
    assert one(text) == expected


@pytest.mark.parametrize("text", [
    "logo@2x.png and icon@3x.jpg",  # retina asset names
    "ssh://git@github.com/org/repo and https://bob@host.example.com/",  # URL user names
    "a @ b dot com, name at example dot com, user@localhost, x@y.c",
    "ftp://anna:s3cret@files.example.com/",  # credentials are url_credentials' business (off)
])
def test_email_negatives(text):
    assert one(text) == text


@pytest.mark.parametrize("text, expected", [
    ("DNS 8.8.8.8 and 1.2.3.4.", "DNS <IP_ADDRESS> and <IP_ADDRESS>."),
    ("http://93.184.216.34:8080/x and [2606:4700:4700::1111]:443",
     "http://<IP_ADDRESS>:8080/x and [<IP_ADDRESS>]:443"),
    ("Google 2001:4860:4860::8888, 6to4 2002:c000:204::1", "Google <IP_ADDRESS>, 6to4 <IP_ADDRESS>"),
    ("mapped ::ffff:8.8.8.8 vs ::ffff:10.1.1.1", "mapped <IP_ADDRESS> vs ::ffff:10.1.1.1"),
])
def test_public_ips_are_redacted(text, expected):
    assert one(text) == expected


@pytest.mark.parametrize("text", [
    "private 10.0.0.1 192.168.1.1 172.16.5.4 loopback 127.0.0.1 link-local 169.254.3.4",
    "shared 100.64.1.1, docs 192.0.2.44 198.51.100.7 203.0.113.9, 0.0.0.0, 255.255.255.255, 240.0.0.1",
    "multicast 224.0.0.251 and 239.1.1.1",
    "IPv6 ::1, fe80::1%eth0, fd12:3456::1, 2001:db8::1 (documentation), 2001::1, ::",
    "version 1.2.3.4, v1.2.3.4, Version: 8.8.8.8, ver. 2.0.1.3, release 10.2.0.1, build 4.3.2.1",
    "dotted runs 1.2.3.4.5 and 8.8.8.8.8, octets 300.1.2.3 and 01.2.3.4",
    "time 12:30:45, MAC 00:1a:2b:3c:4d:5e, std::vector, dead::beef, a::b, Note::",
])
def test_non_public_or_non_ip_left_alone(text):
    assert one(text) == text


@pytest.mark.parametrize("text", [
    "(555) 123-4567", "555-123-4567", "555.123.4567", "212 555 0199", "1-800-555-1234",
    "+44 20 7946 0958", "+1 (555) 123-4567", "+49 (0)30 12345678", "+12025550123", "+1-202-555-0123",
    "+33 1 23 45 67 89", "01 23 45 67 89", "020 7946 0958", "(020) 7946 0958", "030 12345678",
])
def test_phone_positives(text):
    assert one(f"Call {text}, thanks.") == "Call <PHONE>, thanks."
    assert one(f"tel:{text}") == "tel:<PHONE>"


@pytest.mark.parametrize("text", [
    "2023-01-15", "12/05/2024", "15.01.2023", "on 01-02-2023 10 people came",  # dates
    "1.2.3.4", "v10.2.3", "release 2.10.100.1000",  # versions
    "ISBN 978-3-16-148410-0", "ISBN 0-306-40615-2",  # ISBNs
    "12345678901234", "5551234567", "4111 1111 1111 1111", "1234 567 8901", "555-123-4567-89",  # IDs
    "$555.123.4567", "$1,234,567.89", "€ 1.234.567", "price 19.99-24.99",  # prices
    "555-1234", "+5 points", "3+4=7", "score 2-1", "pages 100-200", "123-45-6789",  # short runs
    "2019-2020 season", "19:00-21:00", "1.5 2.5 10.30 12.45", "08:00:00-07:00",
])
def test_phone_negatives(text):
    assert one(text, ip=False) == text


def test_url_credentials_only_when_asked():
    text = "ftp://anna:s3cret@files.example.com/x, https://u:p%40ss@example.com, ssh://git@github.com/x"
    assert one(text) == text
    assert one(text, url_credentials=True) == (
        "ftp://<CREDENTIALS>@files.example.com/x, https://<CREDENTIALS>@example.com, ssh://git@github.com/x")


def test_counts_columns_and_placeholders():
    texts = ["Mail a@example.com or b@example.org from 8.8.8.8; call 555-123-4567.",
             "nothing here", "", None, "http://u:pw@example.com 10.0.0.1"]
    table = run(texts, url_credentials=True)
    assert table.column("text").to_pylist() == [
        "Mail <EMAIL> or <EMAIL> from <IP_ADDRESS>; call <PHONE>.",
        "nothing here", "", None, "http://<CREDENTIALS>@example.com 10.0.0.1"]
    assert table.column("pii.email").to_pylist() == [2, 0, 0, 0, 0]
    assert table.column("pii.ip").to_pylist() == [1, 0, 0, 0, 0]
    assert table.column("pii.phone").to_pylist() == [1, 0, 0, 0, 0]
    assert table.column("pii.url_credentials").to_pylist() == [0, 0, 0, 0, 1]
    assert all(table.schema.field(c).type == pa.int32() for c in COUNT_COLUMNS)
    assert table.column("doc_id").to_pylist() == [0, 1, 2, 3, 4]

    custom = run(texts[:1], placeholders={"email": "email@example.com", "ip": "[IP]"}, phone=False)
    assert custom.column("text")[0].as_py() == "Mail email@example.com or email@example.com from [IP]; call 555-123-4567."
    # A type that is switched off is null ("not looked for"), not 0 ("none found").
    assert custom.column("pii.phone").to_pylist() == [None]
    assert custom.column("pii.url_credentials").to_pylist() == [None]


def test_batch_prefilters_never_hide_a_match():
    """The op sends only rows its Arrow prefilters flag through the Python patterns; every case in
    this file must come out of the op exactly as `redact` (no prefilter) makes it."""
    cases = [text for name, obj in globals().items() if name.startswith("test_")
             for mark in getattr(obj, "pytestmark", []) if mark.name == "parametrize"
             for value in mark.args[1] for text in ([value] if isinstance(value, str) else value[:1])]
    cases += [f"tel:{c}" for c in cases]
    assert len(cases) > 100
    table = run(cases, url_credentials=True)
    assert table.column("text").to_pylist() == [one(c, url_credentials=True) for c in cases]


def test_zero_rows_and_chunked_large_strings():
    table = run([])
    assert table.num_rows == 0 and all(table.schema.field(c).type == pa.int32() for c in COUNT_COLUMNS)
    chunked = pa.chunked_array([pa.array(["x 8.8.8.8"], pa.large_string()),
                                pa.array([None, "y"], pa.large_string())])
    table = run(chunked)
    assert table.column("text").to_pylist() == ["x <IP_ADDRESS>", None, "y"]
    assert table.schema.field("text").type == pa.large_string()


def test_pathological_inputs_stay_fast():
    import time

    texts = ["+" + "1" * 5000, "a" * 20000 + "@" + "b" * 20000, "1.2." * 5000, ":" * 10000,
             "0 12 " * 4000, "(555) " * 4000, "x@" + "a-" * 5000 + ".com", "ab:" * 5000]
    start = time.perf_counter()
    run(texts, url_credentials=True)
    assert time.perf_counter() - start < 2


def test_registered_and_config_validation():
    import curation.pii  # noqa: F401  (registers the op)

    assert get_op("pii") is Pii and not Pii.resources.loads_model
    with pytest.raises(ValidationError):
        PiiConfig.model_validate({"emails": True})
    with pytest.raises(ValidationError):
        PiiConfig.model_validate({"placeholders": {"name": "<NAME>"}})
    config = PiiConfig(url_credentials=True, placeholders={"phone": "[PHONE]"})
    assert PiiConfig.model_validate(config.model_dump(mode="json")) == config

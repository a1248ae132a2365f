"""Which webhooks need a new caBundle: the pure half of the caBundle sync."""

import base64

from webhook.adapters.cabundle import cabundle_patch

CA = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
B64 = base64.b64encode(CA).decode()


def config(*bundles):
    return {"webhooks": [{"name": f"w{i}", "clientConfig": ({"caBundle": b} if b else {"url": "https://x"})}
                         for i, b in enumerate(bundles)]}


def test_every_webhook_without_the_bundle_is_patched_by_name():
    assert cabundle_patch(config(None, "old", B64), CA) == {"webhooks": [
        {"name": "w0", "clientConfig": {"caBundle": B64}}, {"name": "w1", "clientConfig": {"caBundle": B64}}]}


def test_nothing_to_do_when_current():
    assert cabundle_patch(config(B64, B64), CA) is None
    assert cabundle_patch({"webhooks": None}, CA) is None

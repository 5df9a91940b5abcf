from __future__ import annotations

import re

from conftest import login


def test_login_page_renders_with_csrf_token(client):
    page = client.get("/login")
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.get_data(as_text=True)


def test_private_pages_redirect_to_login(client):
    response = client.get("/contacts")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_login_and_logout(client, user_factory):
    email, password = user_factory()
    response = login(client, email, password)
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    assert email in client.get("/").get_data(as_text=True)
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_login_without_csrf_token_is_refused(client, user_factory):
    email, password = user_factory()
    response = client.post("/login", data={"email": email, "password": password})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused(client, user_factory):
    email, _ = user_factory()
    assert login(client, email, "wrong password!").status_code == 401
    assert client.get("/").status_code == 302


def test_login_is_rate_limited_per_account(client, user_factory):
    email, password = user_factory()
    for _ in range(5):
        assert login(client, email, "nope-nope-nope").status_code == 401
    throttled = login(client, email, password)
    assert throttled.status_code == 429
    assert "Too many failed attempts" in throttled.get_data(as_text=True)


def test_login_next_parameter_never_redirects_off_site(client, user_factory):
    email, password = user_factory()
    page = client.get("/login?next=//evil.example/x")
    token = re.search(
        r'name="csrf_token" type="hidden" value="([^"]+)"', page.get_data(as_text=True)
    ).group(1)
    response = client.post(
        "/login?next=//evil.example/x",
        data={"email": email, "password": password, "csrf_token": token},
    )
    assert response.headers["Location"] == "/"


def test_session_cookie_api_calls_need_the_csrf_header(client, user_factory):
    email, password = user_factory()
    login(client, email, password)
    assert client.get("/api/v1/contacts").status_code == 200
    refused = client.post("/api/v1/contacts", json={"email": "a@example.com"})
    assert refused.status_code == 401
    assert "CSRF" in refused.json["error"]["message"]
    page = client.get("/").get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    ok = client.post(
        "/api/v1/contacts", json={"email": "a@example.com"}, headers={"X-CSRFToken": token}
    )
    assert ok.status_code == 201


def test_contacts_pages_escape_attacker_controlled_values(client, user_factory, api):
    email, password = user_factory(role="viewer")
    c = api.post(
        "/contacts", {"email": "x@example.com", "first_name": "<script>alert(1)</script>"}
    ).json
    api.post(
        "/events",
        {
            "events": [
                {
                    "name": "page_viewed",
                    "email": "x@example.com",
                    "properties": {"ua": "<img src=x onerror=alert(1)>"},
                }
            ]
        },
    )
    login(client, email, password)
    listing = client.get("/contacts").get_data(as_text=True)
    detail = client.get(f"/contacts/{c['id']}").get_data(as_text=True)
    for html in (listing, detail):
        assert "<script>alert(1)</script>" not in html
        assert "<img src=x" not in html
    assert "&lt;script&gt;" in listing


def test_sent_mail_page_shows_what_the_catcher_received(client, user_factory, settings):
    import smtplib
    from email.message import EmailMessage

    from automation.email.catcher import start_catcher

    controller = start_catcher(settings.maildir, port=0)
    try:
        port = controller.port
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = (
            "hello@example.com",
            "ana@example.com",
            "Welcome, Ana",
        )
        msg.set_content("Plain hello")
        msg.add_alternative("<p>HTML <b>hello</b></p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(msg)
    finally:
        controller.stop()
    email, password = user_factory(role="viewer")
    login(client, email, password)
    listing = client.get("/sent-mail").get_data(as_text=True)
    assert "Welcome, Ana" in listing and "ana@example.com" in listing
    key = re.search(r'href="/sent-mail/([^"]+)"', listing).group(1)
    detail = client.get(f"/sent-mail/{key}").get_data(as_text=True)
    assert "Plain hello" in detail
    assert 'sandbox title="HTML part" srcdoc="&lt;p&gt;HTML &lt;b&gt;hello' in detail
    assert client.get("/sent-mail/..%2F..%2Fetc").status_code == 404

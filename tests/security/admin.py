"""What a site's administrator or user does to accounts, run by the security tests
in a subprocess on the sqlite file Daphne and the worker use::

    python -m tests.security.admin migrate
    python -m tests.security.admin user NAME [--staff]   # prints {"name", "id", "password", "session", "token"}
    python -m tests.security.admin password NAME NEW
    python -m tests.security.admin deactivate NAME
    python -m tests.security.admin token NAME            # prints {"token"}
    python -m tests.security.admin logout SESSION_KEY
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.security.settings")


def main(argv: list[str]) -> dict[str, object]:
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from changeflow_channels.auth import make_token

    parser = argparse.ArgumentParser(prog="tests.security.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate")
    user_parser = commands.add_parser("user")
    user_parser.add_argument("name")
    user_parser.add_argument("--staff", action="store_true")
    password_parser = commands.add_parser("password")
    password_parser.add_argument("name")
    password_parser.add_argument("new")
    commands.add_parser("deactivate").add_argument("name")
    commands.add_parser("token").add_argument("name")
    commands.add_parser("logout").add_argument("session")
    args = parser.parse_args(argv)

    users = get_user_model()
    if args.command == "migrate":
        call_command("migrate", verbosity=0)
        return {}
    if args.command == "logout":
        SessionStore(session_key=args.session).delete()
        return {}
    if args.command == "user":
        password = f"pw-{args.name}"
        user = users.objects.create_user(args.name, password=password, is_staff=args.staff)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        return {
            "name": user.username,
            "id": str(user.pk),
            "password": password,
            "session": session.session_key,
            "token": make_token(user),
        }
    user = users.objects.get(username=args.name)
    if args.command == "password":
        user.set_password(args.new)
        user.save()
    elif args.command == "deactivate":
        user.is_active = False
        user.save()
    elif args.command == "token":
        return {"token": make_token(user)}
    return {}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(sys.argv[1:])) + "\n")

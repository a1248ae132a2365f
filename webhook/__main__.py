"""`python -m webhook` is the same as the `audit-webhook` command."""

from webhook.cli import main

raise SystemExit(main())

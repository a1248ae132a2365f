"""`python -m webhook` is the same as the `audit-webhook` command."""

from webhook.adapters.cli import main

raise SystemExit(main())

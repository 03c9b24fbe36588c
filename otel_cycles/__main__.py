"""`python -m otel_cycles` is the `otel-cycles` command."""

from otel_cycles._cli import main

raise SystemExit(main())

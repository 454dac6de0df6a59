from tal.cli.main import main

raise SystemExit(main())

from stages.cli import main

raise SystemExit(main())

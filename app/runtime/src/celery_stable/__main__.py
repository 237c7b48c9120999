from celery_stable.cli import main

raise SystemExit(main())

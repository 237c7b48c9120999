from video_renderer.cli import main

raise SystemExit(main())

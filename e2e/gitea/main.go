// Command gitea is Gitea's own CLI (`gitea web`, `gitea admin …`) built from the pinned module for
// the end-to-end suite; e2e/scripts/build-gitea.sh generates the go.mod next to a copy of this
// file. The sqlite driver needs the `sqlite sqlite_unlock_notify` build tags.
package main

import (
	"os"

	"code.gitea.io/gitea/cmd"
	"code.gitea.io/gitea/modules/log"
	"code.gitea.io/gitea/modules/setting"

	// Markdown rendering of PR comments (the sticky comment is Markdown).
	_ "code.gitea.io/gitea/modules/markup/markdown"

	"github.com/urfave/cli/v3"
)

// Version is stamped by the build script with the pinned module version.
var Version = "development"

func main() {
	setting.AppVer = Version
	cli.OsExiter = func(code int) {
		log.GetManager().Close()
		os.Exit(code)
	}
	app := cmd.NewMainApp(cmd.AppVersion{Version: Version, Extra: " (pullwarden e2e build)"})
	_ = cmd.RunMainApp(app, os.Args...)
	log.GetManager().Close()
}

// Command argocd serves the two Argo CD components the end-to-end suite runs, the application
// controller and the repo-server, plus the git credential helper the repo-server hands to git, all
// from the pinned github.com/argoproj/argo-cd/v3 module (e2e/argocd/VERSION).
// e2e/scripts/build-argocd.sh generates the go.mod next to a copy of this file.
//
// Like Argo CD's own multi-call binary it picks the component by $ARGOCD_BINARY_NAME, else by the
// name it was started as; unlike it, it links only these three, so the API server, UI, dex,
// notifications, ApplicationSet controller and CLI are not compiled.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	gitaskpass "github.com/argoproj/argo-cd/v3/cmd/argocd-git-ask-pass/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/util/log"
)

func init() {
	// Route klog (client-go) through Argo CD's configured logrus logger, as Argo CD's main does.
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
}

func main() {
	name := os.Getenv("ARGOCD_BINARY_NAME")
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	var command *cobra.Command
	switch name {
	case "argocd-application-controller":
		command = appcontroller.NewCommand()
	case "argocd-repo-server":
		command = reposerver.NewCommand()
	case "argocd-git-ask-pass":
		// git runs $GIT_ASKPASS ("argocd") with ARGOCD_BINARY_NAME set to this name.
		command = gitaskpass.NewCommand()
		command.SilenceErrors = true
		command.SilenceUsage = true
	default:
		fmt.Fprintf(os.Stderr, "argocd (pullwarden e2e build): unknown component %q; set ARGOCD_BINARY_NAME to argocd-application-controller, argocd-repo-server or argocd-git-ask-pass\n", name)
		os.Exit(2)
	}
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}

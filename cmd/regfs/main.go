// Command regfs mounts a container-image registry as a read-only
// filesystem. This package only parses flags and wires the parts together
// (registry → layercache → layerindex → fs); the behaviour lives in them.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise it comes from the module and VCS information Go records.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " (" + s.Value[:12] + ")"
		}
	}
	return v
}

// versionText is what `regfs version` and `regfs --version` print: one
// line, "regfs <module version> (<go version> <os>/<arch>)".
func versionText() string {
	return fmt.Sprintf("regfs %s (%s %s/%s)\n", versionString(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "regfs",
		Short: "Mount a container registry as a read-only filesystem",
		Long: `regfs mounts a container-image registry (OCI Distribution / Docker v2, or the
legacy Docker v1 API) as a read-only FUSE filesystem: repositories, tags and
layers are directories; manifests, configs and layer bytes are files. Nothing
is downloaded until it is read, and then only the byte ranges read.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(),
	}
	// --version prints what `regfs version` prints.
	root.SetVersionTemplate(versionText())
	root.AddCommand(newMountCommand(), newPrefetchCommand(), newCacheCommand(), newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the regfs version, the Go version it was built with and its os/arch",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprint(cmd.OutOrStdout(), versionText())
		},
	}
}

// usageError is a command line that cannot mean anything (a malformed
// reference): regfs exits 2 for it, 1 for anything that failed at run time.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "regfs: %v\n", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

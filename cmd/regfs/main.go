// Command regfs mounts a container-image registry as a read-only
// filesystem. This package only parses flags and wires the parts together
// (registry → layercache → layerindex → fs); the behaviour lives in them.
package main

import (
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
	root.AddCommand(newMountCommand(), newPrefetchCommand(), newIndexCommand(), newCacheCommand(), newVersionCommand(), newManCommand())
	// A wrong flag or flag value is a usage error (exit status 2).
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
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

func main() {
	root := newRootCommand()
	if args, ok := mountHelperArgs(root, os.Args[1:]); ok {
		root.SetArgs(args)
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "regfs: %v\n", err)
		os.Exit(exitStatus(err))
	}
}

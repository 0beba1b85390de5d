package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// mountHelperArgs recognises the command line mount.fuse3 runs for
// `mount -t fuse.regfs SOURCE MOUNTPOINT -o OPTS` (and for an fstab line of
// type fuse.regfs): "SOURCE MOUNTPOINT -o OPTS", with no subcommand. It
// returns the `regfs mount` command line that does the same in the
// background, returning once the mount answers as mount(8) expects; SOURCE
// is passed through as written. ok is false for any other command line.
func mountHelperArgs(root *cobra.Command, args []string) (mountArgs []string, ok bool) {
	if len(args) < 3 || strings.HasPrefix(args[0], "-") || isCommandName(root, args[0]) {
		return nil, false
	}
	source, mountpoint := args[0], args[1]
	mountArgs = []string{"mount", "--daemon"}
	for rest := args[2:]; len(rest) > 0; {
		switch {
		case rest[0] == "-o" && len(rest) > 1:
			mountArgs = append(mountArgs, "-o", rest[1])
			rest = rest[2:]
		case strings.HasPrefix(rest[0], "-o") && len(rest[0]) > 2:
			mountArgs = append(mountArgs, "-o", rest[0][2:])
			rest = rest[1:]
		default:
			return nil, false
		}
	}
	return append(mountArgs, "--", source, mountpoint), true
}

// isCommandName reports whether name is one of root's subcommands,
// including those cobra adds when it runs (help, completion).
func isCommandName(root *cobra.Command, name string) bool {
	switch name {
	case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
		return true
	}
	for _, c := range root.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return true
		}
	}
	return false
}

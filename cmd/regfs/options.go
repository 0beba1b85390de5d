package main

import (
	"strings"

	"github.com/spf13/pflag"
)

// ignoredMountOptions are the generic options mount(8), /etc/fstab and
// mount.fuse3 pass that change nothing for regfs: it always mounts
// read-only, nosuid and nodev (a registry's setuid files and device nodes
// stay inert), and access times and sync modes mean nothing without writes.
var ignoredMountOptions = map[string]bool{
	"ro": true, "defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true, "strictatime": true,
	"nostrictatime": true, "lazytime": true, "nolazytime": true, "diratime": true, "nodiratime": true,
	"sync": true, "async": true, "dirsync": true, "silent": true, "loud": true,
}

// optionAliases are the FUSE spellings of regfs flags.
var optionAliases = map[string]string{"nonempty": "allow-non-empty"}

// applyMountOptions applies -o option lists ("a,b=c") to the flags in fl,
// after the flags given as flags: an option is a flag's name with
// underscores for dashes, "name=value", or "name" alone for a boolean.
// Generic mount options are accepted and ignored; rw and anything unknown
// are usage errors that name the option.
func applyMountOptions(fl *pflag.FlagSet, lists []string) error {
	var opts []string
	for _, list := range lists {
		for _, o := range strings.Split(list, ",") {
			if o = strings.TrimSpace(o); o != "" {
				opts = append(opts, o)
			}
		}
	}
	allowOther := false
	for _, o := range opts {
		if o == "allow_other" || o == "allow_other=true" {
			allowOther = true
		}
	}
	for _, o := range opts {
		name, value, hasValue := strings.Cut(o, "=")
		switch {
		case ignoredMountOptions[o], strings.HasPrefix(o, "x-"), strings.HasPrefix(o, "comment="):
			continue
		case o == "rw":
			return usageErrorf("-o rw: regfs mounts read-only; give ro (mount(8) passes rw unless ro is given)")
		case o == "default_permissions":
			// regfs sets it with allow_other, and only then do other users
			// (whom it is for) reach the mount.
			if !allowOther {
				return usageErrorf("-o default_permissions: regfs sets it with allow_other; give both or neither")
			}
			continue
		}
		flagName := strings.ReplaceAll(name, "_", "-")
		if alias, ok := optionAliases[name]; ok {
			flagName = alias
		}
		f := fl.Lookup(flagName)
		if f == nil || flagName == "options" || flagName == "help" || strings.Contains(name, "-") {
			return usageErrorf("-o %s: unknown option (options are the mount flags with underscores, e.g. cache_size=1G, allow_other; see regfs mount --help)", o)
		}
		if !hasValue {
			if f.Value.Type() != "bool" {
				return usageErrorf("-o %s: wants a value (%s=VALUE)", o, name)
			}
			value = "true"
		}
		if err := fl.Set(flagName, value); err != nil {
			return usageErrorf("-o %s: %v", o, err)
		}
	}
	return nil
}

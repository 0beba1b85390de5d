package main

import (
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// registerFlagCompletions makes `regfs completion` scripts offer the
// values of cmd's flags that have a fixed set, and, for -o, the option
// names (every flag with underscores) after the last comma typed.
func registerFlagCompletions(cmd *cobra.Command) {
	fixed := map[string][]string{
		"api":               {"auto", "v2", "v1"},
		"verify":            {"lazy", "strict"},
		"published-indexes": {publishedAuto, publishedOff},
		"log-level":         {"debug", "info", "warn", "error"},
		"log-format":        {"text", "json"},
	}
	for name, values := range fixed {
		if cmd.Flags().Lookup(name) != nil {
			cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	if cmd.Flags().Lookup("options") != nil {
		cmd.RegisterFlagCompletionFunc("options", func(c *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return optionCompletions(c.Flags(), toComplete), cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
		})
	}
}

// optionCompletions are the -o lists that complete toComplete's last
// option: a boolean flag's name, or another flag's name and "=".
func optionCompletions(fl *pflag.FlagSet, toComplete string) []string {
	done := ""
	if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
		done = toComplete[:i+1]
	}
	var out []string
	fl.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "options" || f.Name == "help" {
			return
		}
		opt := strings.ReplaceAll(f.Name, "-", "_")
		if f.Value.Type() != "bool" {
			opt += "="
		}
		if strings.HasPrefix(done+opt, toComplete) {
			out = append(out, done+opt)
		}
	})
	sort.Strings(out)
	return out
}

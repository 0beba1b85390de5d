package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestApplyMountOptions(t *testing.T) {
	for _, tc := range []struct {
		opts    []string
		want    string // what the flags become, as "flag=value" pairs
		wantErr string // in the error; "" for none
	}{
		{[]string{"ro,allow_other,cache_size=1G"}, "allow-other=true cache-size=1G", ""},
		{[]string{"ro,nofail,_netdev,auto,noauto,user,users,defaults,dev,suid,exec,nosuid,nodev,noatime,x-systemd.automount,x-systemd.requires=network-online.target,comment=x"}, "", ""},
		{[]string{"plain_http,tag_ttl=5s", "block_size=64K"}, "plain-http=true tag-ttl=5s block-size=64K", ""},
		{[]string{"allow_other=false,nonempty"}, "allow-other=false allow-non-empty=true", ""},
		{[]string{"noexec,log_level=debug,log_file=/tmp/x.log,verify=strict"}, "noexec=true log-level=debug log-file=/tmp/x.log verify=strict", ""},
		{[]string{"allow_other,default_permissions"}, "allow-other=true", ""},
		{[]string{"", " ro , allow_other "}, "allow-other=true", ""},
		{[]string{"rw"}, "", "-o rw: regfs mounts read-only"},
		{[]string{"ro,bogus"}, "", "-o bogus: unknown option"},
		{[]string{"cache-size=1G"}, "", "-o cache-size=1G: unknown option"},
		{[]string{"options=ro"}, "", "unknown option"},
		{[]string{"help"}, "", "unknown option"},
		{[]string{"cache_size"}, "", "-o cache_size: wants a value (cache_size=VALUE)"},
		{[]string{"cache_size=lots"}, "", `-o cache_size=lots: invalid argument "lots"`},
		{[]string{"allow_other=maybe"}, "", "-o allow_other=maybe"},
		{[]string{"default_permissions"}, "", "-o default_permissions: regfs sets it with allow_other"},
	} {
		cmd := newMountCommand()
		err := applyMountOptions(cmd.Flags(), tc.opts)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || exitStatus(err) != exitUsage {
				t.Errorf("%q: got %v (exit %d), want a usage error with %q", tc.opts, err, exitStatus(err), tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: got %v, want no error", tc.opts, err)
			continue
		}
		var got []string
		cmd.Flags().Visit(func(f *pflag.Flag) { got = append(got, f.Name+"="+f.Value.String()) })
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: got flags %q, want %q", tc.opts, strings.Join(got, " "), tc.want)
		}
	}
}

// Every flag of regfs mount can be given as an -o option.
func TestEveryMountFlagIsAnOption(t *testing.T) {
	cmd := newMountCommand()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "options" {
			return
		}
		opt := strings.ReplaceAll(f.Name, "-", "_") + "=" + f.DefValue
		if f.Value.Type() == "bool" {
			opt = strings.ReplaceAll(f.Name, "-", "_")
		}
		if err := applyMountOptions(newMountCommand().Flags(), []string{opt}); err != nil {
			t.Errorf("-o %s (for --%s): %v", opt, f.Name, err)
		}
	})
}

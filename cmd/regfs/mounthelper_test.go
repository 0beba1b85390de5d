package main

import (
	"strings"
	"testing"
)

func TestMountHelperArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // the regfs command line; "" when not the helper form
	}{
		{[]string{"ghcr.io", "/mnt/reg", "-o", "ro,allow_other,dev,suid"}, "mount --daemon -o ro,allow_other,dev,suid -- ghcr.io /mnt/reg"},
		{[]string{"127.0.0.1:5000/library/busybox:latest", "/mnt/a b", "-oro", "-o", "cache_size=1G"}, "mount --daemon -o ro -o cache_size=1G -- 127.0.0.1:5000/library/busybox:latest /mnt/a b"},
		{[]string{"-weird", "/mnt/reg", "-o", "ro"}, ""},
		{[]string{"ghcr.io", "/mnt/reg"}, ""},
		{[]string{"ghcr.io", "/mnt/reg", "-o"}, ""},
		{[]string{"ghcr.io", "/mnt/reg", "-f", "ro"}, ""},
		{[]string{"mount", "ghcr.io", "/mnt/reg", "-o", "ro"}, ""},
		{[]string{"prefetch", "ghcr.io/x:1", "-o", "ro"}, ""},
		{[]string{"help", "mount", "-o", "x"}, ""},
		{[]string{"completion", "bash", "-o", "x"}, ""},
	} {
		got, ok := mountHelperArgs(newRootCommand(), tc.args)
		if gotS := strings.Join(got, " "); ok != (tc.want != "") || gotS != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.args, gotS, ok, tc.want)
		}
	}
}

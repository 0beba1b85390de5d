package fs

import (
	"context"
	"strings"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// A hardlink whose target no layer has is listed (the tar has the name),
// and opening it is EIO with one log line naming the target, not ENOENT
// (README: a listed file never answers "no such file"). In one layer's
// own view a link to a file of a layer below is the same: its data is not
// in that view.
func TestHardlinkToMissingTargetIsEIO(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.InfoLevel)
	h := newHarness(t, func(o *Options) { o.Log = log })
	img := h.c.addImage(t, "test/links", "v1", amd64,
		[]testFile{{name: "app/", typ: '5'}, {name: "app/main.sh", body: "echo main\n"}},
		[]testFile{
			{name: "app/link", typ: '1', link: "app/main.sh"},
			{name: "app/nowhere", typ: '1', link: "no/such/file"},
		}).img
	r := "/test/links:v1/rootfs"
	if got := h.readdir(r + "/app"); !sameStrings(got, []string{"link", "main.sh", "nowhere"}) {
		t.Errorf("readdir: got %v, want link, main.sh, nowhere", got)
	}
	if got := string(h.readFile(r + "/app/link")); got != "echo main\n" {
		t.Errorf("rootfs/app/link: got %q, want the lower layer's file", got)
	}
	upper := "/test/links:v1/layers/" + img.Layers[1].ID + "/fs"
	for _, p := range []string{r + "/app/nowhere", upper + "/app/nowhere", upper + "/app/link"} {
		hook.Reset()
		in, _ := h.mustWalk(p)
		_, _, errno := in.Operations().(gofs.NodeOpener).Open(context.Background(), syscall.O_RDONLY)
		if errno != syscall.EIO {
			t.Errorf("open %s: got %v, want EIO", p, errno)
		}
		var lines []string
		for _, e := range hook.AllEntries() {
			if e.Level <= logrus.InfoLevel {
				lines = append(lines, e.Message)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "target") {
			t.Errorf("open %s: logged %q, want one line naming the target", p, lines)
		}
	}
}

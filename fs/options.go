package fs

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/regfs/regfs/registry"
	"github.com/regfs/regfs/session"
)

// Defaults of Options; each field documents its own.
const (
	DefaultTagTTL    = 30 * time.Second
	DefaultOpTimeout = time.Minute
	// immutableTTL is the kernel entry/attr timeout of anything reached by
	// digest: it never changes, so the kernel may keep it as long as it likes.
	immutableTTL = 24 * time.Hour
	// sizeWait bounds how long opening layer.tar waits for the tar size
	// before serving the open file in direct-I/O mode (size still unknown).
	sizeWait = 2 * time.Second
)

// Options configure a Root.
type Options struct {
	// Session is the registry client, block cache and layer index wired
	// together; required. Layer bytes, layer.tar, layers/<id>/fs/ and
	// rootfs/ are read through it. Its client's metadata is wrapped in this
	// package's metadata cache (manifests by digest kept, tags and
	// listings for TagTTL). Build it with DetachIndexBuilds: a timed-out
	// operation must not stop an index pass the next one waits for.
	Session *session.Session
	// Platform picks the manifest of a multi-platform index shown in the
	// image directory itself. Default: registry.HostPlatform().
	Platform registry.Platform
	// TagTTL is how long tag lists, tag → digest resolutions and the catalog
	// are trusted, by this package and by the kernel (entry timeouts of
	// tag-named directories, negative lookups). Default 30s.
	TagTTL time.Duration
	// OpTimeout bounds every FUSE operation that may wait on the network.
	// Default 1 minute.
	OpTimeout time.Duration
	// Log receives one line per error turned into EIO/EACCES. Default
	// logrus.StandardLogger().
	Log logrus.FieldLogger
	// Status, when set, is shown as the hidden .regfs/ directory.
	Status *Status
	// Repository, when set, makes the mount root that one repository
	// instead of the registry: its tags as <tag>/ and, resolved on lookup,
	// its manifests as <alg>:<hex>/. Default "": the whole registry.
	Repository string
	// Reference, a tag or a digest of Repository, makes the mount root
	// that image's directory: a tag is followed as <repo>:<tag>/ follows
	// it (TagTTL), a digest pins. Needs Repository. Default "".
	Reference string
}

func (o Options) withDefaults() (Options, error) {
	if o.Session == nil {
		return o, errors.New("fs: Options.Session is required")
	}
	if o.Platform.OS == "" {
		o.Platform = registry.HostPlatform()
	}
	if o.TagTTL <= 0 {
		o.TagTTL = DefaultTagTTL
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	if o.Repository != "" {
		for _, c := range strings.Split(o.Repository, "/") {
			if !isComponent(c) {
				return o, fmt.Errorf("fs: Options.Repository %q: bad path component %q", o.Repository, c)
			}
		}
	}
	if o.Reference != "" {
		if o.Repository == "" {
			return o, fmt.Errorf("fs: Options.Reference %q needs Options.Repository", o.Reference)
		}
		if !isTag(o.Reference) && !digestRE.MatchString(o.Reference) {
			return o, fmt.Errorf("fs: Options.Reference %q: want a tag or a sha256/sha512 digest", o.Reference)
		}
	}
	return o, nil
}

// MountConfig is how the tree is mounted; cmd/regfs fills it from flags.
type MountConfig struct {
	// AllowOther lets other users read the mount (needs user_allow_other in
	// /etc/fuse.conf for non-root mounts), with default_permissions: the
	// kernel enforces each file's mode and owner.
	AllowOther bool
	// AllowNonEmpty mounts over a directory that has files (they are hidden
	// while mounted); otherwise Mount refuses it (CheckMountpoint).
	AllowNonEmpty bool
	// MaxRead is the largest READ request the kernel sends, and the kernel
	// readahead. Default 1 MiB: one cache block per request.
	MaxRead int
	// KernelReadahead is the kernel's readahead window for files of the
	// mount, set through the mount's backing device after mounting (root
	// only; otherwise the kernel's 128 KiB stays). Default 8 MiB: a
	// sequential read(2) then reaches the server as several MaxRead-sized
	// READs in flight. Negative leaves the kernel's default.
	KernelReadahead int
	// NoExec mounts noexec: no program in the mount can be executed.
	NoExec bool
	// Debug logs every FUSE request (go-fuse's debug output).
	Debug bool
}

// DefaultKernelReadahead is MountConfig.KernelReadahead's default.
const DefaultKernelReadahead = 8 << 20

// fuseOptions are the go-fuse options for root: timeouts set on purpose
// (nil would mean no kernel caching at all), read-only, nosuid, nodev,
// large reads, and mount(2) directly when running as root.
func (r *Root) fuseOptions(mc MountConfig) *gofs.Options {
	t := r.t
	short := t.tagTTL
	if mc.MaxRead <= 0 {
		mc.MaxRead = 1 << 20
	}
	opts := []string{"ro", "nosuid", "nodev"}
	if mc.AllowOther {
		// Other users reach the mount: the kernel must check each file's
		// mode and owner (a root-owned 0600 file in an image stays root's).
		// regfs does no permission checks of its own.
		opts = append(opts, "default_permissions")
	}
	if mc.NoExec {
		// go-fuse turns it into MS_NOEXEC for mount(2), fusermount3 too.
		opts = append(opts, "noexec")
	}
	return &gofs.Options{
		// Every node kind sets its own timeouts: long for content by
		// digest, short for tags. The entry default covers what go-fuse
		// answers by itself. No attribute default on purpose: go-fuse
		// replaces a 0 timeout by the default, and files whose size is not
		// known yet (layer.tar before its first open, .regfs/stats) need 0.
		EntryTimeout: &short,
		// A name that did not resolve may appear once pushed: retry after
		// the tag TTL, not sooner (shells and ls probe many names).
		NegativeTimeout: &short,
		// A tar entry with mode 0000 is shown as 0000, not go-fuse's 0644/0755.
		NullPermissions: true,
		// No UID/GID here: go-fuse would put them on every node owned by
		// uid 0, and a root-owned file in an image must stay root's when
		// a user mounts. The tree's own nodes name their owner (mountOwner).
		MountOptions: fuse.MountOptions{
			FsName:     r.source,
			Name:       "regfs",
			AllowOther: mc.AllowOther,
			Options:    opts,
			// READ requests are capped by MaxWrite (max_read) and by
			// MaxReadAhead; both raised so one request can carry a block.
			MaxWrite:     mc.MaxRead,
			MaxReadAhead: mc.MaxRead,
			DirectMount:  os.Geteuid() == 0,
			// MS_RDONLY on the mount itself: the kernel answers EROFS to
			// every write before it reaches us.
			DirectMountFlags: msRdonlyNosuidNodev,
			// Replies come from memory (ReadResultData/Vector): a splice
			// would only add a pipe round trip, and fails outright for
			// 1 MiB replies with the default pipe size.
			DisableSplice: true,
			// The kernel asks READDIRPLUS (a lookup and attributes per
			// entry) for a directory's first batch and for later batches
			// only once the caller stats what it listed (`ls -l`), plain
			// READDIR otherwise (`ls`, find): see docs/design/wiring.md.
			ExtraCapabilities: fuse.CAP_READDIRPLUS_AUTO,
			Debug:             mc.Debug,
		},
	}
}

// Mount mounts root on mountpoint and starts serving on goroutines of its
// own. The caller waits with server.Wait and unmounts with server.Unmount.
func (r *Root) Mount(mountpoint string, mc MountConfig) (*fuse.Server, error) {
	if err := CheckMountpoint(mountpoint, mc.AllowNonEmpty); err != nil {
		return nil, err
	}
	server, err := gofs.Mount(mountpoint, r.top, r.fuseOptions(mc))
	if err != nil {
		return nil, err
	}
	if mc.KernelReadahead == 0 {
		mc.KernelReadahead = DefaultKernelReadahead
	}
	if mc.KernelReadahead > 0 && os.Geteuid() == 0 {
		if err := setKernelReadahead(mountpoint, mc.KernelReadahead); err != nil {
			r.t.log.WithError(err).Debug("keeping the kernel's readahead")
		}
	}
	return server, nil
}

package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// noXattrs is what the directories and files regfs makes up (repositories,
// tags, image directories, manifest.json, blobs...) answer to extended
// attribute requests: they have none. Getxattr answers ENOTSUP rather than
// ENODATA: tools that ask for every entry (`ls -l` asks each one for
// security.selinux and its POSIX ACLs) then stop asking for the rest of the
// mount's device, instead of costing three FUSE round trips per entry.
// Tar entries keep their own xattrs (entryBase).
type noXattrs struct{}

func (noXattrs) Getxattr(context.Context, string, []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOTSUP
}

// Listxattr lists nothing: copy tools (cp -a, rsync -X, tar --xattrs) then
// copy no attributes and report no error.
func (noXattrs) Listxattr(context.Context, []byte) (uint32, syscall.Errno) {
	return 0, 0
}

var (
	_ = (gofs.NodeGetxattrer)((*pathDir)(nil))
	_ = (gofs.NodeGetxattrer)((*tagsDir)(nil))
	_ = (gofs.NodeGetxattrer)((*digestsDir)(nil))
	_ = (gofs.NodeGetxattrer)((*imageDir)(nil))
	_ = (gofs.NodeGetxattrer)((*fixedDir)(nil))
	_ = (gofs.NodeGetxattrer)((*bytesFile)(nil))
	_ = (gofs.NodeGetxattrer)((*blobFile)(nil))
	_ = (gofs.NodeGetxattrer)((*tarFile)(nil))
	_ = (gofs.NodeGetxattrer)((*liveFile)(nil))
	_ = (gofs.NodeGetxattrer)((*imageTarFile)(nil))
	_ = (gofs.NodeGetxattrer)((*ociBlobsDir)(nil))
	_ = (gofs.NodeListxattrer)((*pathDir)(nil))
	_ = (gofs.NodeListxattrer)((*tagsDir)(nil))
	_ = (gofs.NodeListxattrer)((*digestsDir)(nil))
	_ = (gofs.NodeListxattrer)((*imageDir)(nil))
	_ = (gofs.NodeListxattrer)((*fixedDir)(nil))
	_ = (gofs.NodeListxattrer)((*bytesFile)(nil))
	_ = (gofs.NodeListxattrer)((*blobFile)(nil))
	_ = (gofs.NodeListxattrer)((*tarFile)(nil))
	_ = (gofs.NodeListxattrer)((*liveFile)(nil))
	_ = (gofs.NodeListxattrer)((*imageTarFile)(nil))
	_ = (gofs.NodeListxattrer)((*ociBlobsDir)(nil))
)

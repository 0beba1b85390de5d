package layercache

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"
)

// The disk tier's layout version is the name of an empty file in DiskDir
// (empty: it takes no room under Options.DiskBytes). Version 2 binds each
// file's trailer to its place and keeps unverified blocks out of the
// digest-named directories; a version 1 tier held blocks fetched by
// unchecked ranged reads under the bare digest, so its blocks and files are
// never read: they are removed when the tier is opened.
const layoutStamp = ".layout-v2"

// checkLayout makes dir a tier of the current layout: an unstamped
// directory holding data files (temp files aside) has its blocks and files
// removed, with one log line, before the stamp is made.
func checkLayout(dir string, log logrus.FieldLogger) error {
	stamp := filepath.Join(dir, layoutStamp)
	if _, err := os.Stat(stamp); err == nil {
		return nil
	}
	found, err := scanDisk(dir, false)
	if err != nil {
		return fmt.Errorf("layercache: disk tier layout: %w", err)
	}
	if len(found) > 0 {
		for _, sub := range []string{blocksDirName, filesDirName} {
			if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
				return fmt.Errorf("layercache: disk tier layout: clearing the old layout: %w", err)
			}
		}
		log.Infof("layercache: disk cache %s had an older layout: its %d blocks and files were removed", dir, len(found))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("layercache: disk tier: %w", err)
	}
	f, err := os.Create(stamp)
	if err != nil {
		return fmt.Errorf("layercache: disk tier layout: %w", err)
	}
	return f.Close()
}

package fs

import "syscall"

const msRdonlyNosuidNodev = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV

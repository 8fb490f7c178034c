/* Input for bindgen: the libext2fs API used by the ext2fs crate (see src/lib.rs for the command). */
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <ext2fs/ext2_ext_attr.h>
#include <ext2fs/ext3_extents.h>
#include <ext2fs/ext2_err.h>
#include <et/com_err.h>

/// What an unpacked root needs that a directory on the host cannot hold for an unprivileged
/// builder: owners, full modes (setuid, setgid, sticky), extended attributes and device
/// nodes. The ext4 builder writes these straight into the image, the same way whether clade
/// runs as root or not, so an image's bytes never depend on who built it.
public struct RootMetadata: Sendable, Equatable {
    /// Owner, mode and extended attributes of one path.
    public struct Attributes: Sendable, Equatable {
        /// The full `st_mode`: file type and permission bits.
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
        /// Extended attributes by full name (`security.capability`, `user.x`).
        public var xattrs: [String: [UInt8]]

        public init(mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0, xattrs: [String: [UInt8]] = [:]) {
            self.mode = mode
            self.uid = uid
            self.gid = gid
            self.xattrs = xattrs
        }
    }

    /// A character or block device, created in the image only (never on the host).
    public struct Device: Sendable, Equatable {
        public var isBlock: Bool
        public var major: UInt32
        public var minor: UInt32
    }

    /// By root-relative path without a leading slash; `""` is the root directory itself.
    public var attributes: [String: Attributes] = [:]
    /// Device nodes by root-relative path; their attributes are in `attributes` too.
    public var devices: [String: Device] = [:]

    public init() {}
}

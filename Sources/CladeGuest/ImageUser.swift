import CladeGuestProtocol

/// Resolves an image config's `User` to numbers through the image's own `/etc/passwd` and
/// `/etc/group` when the image is built, as a container runtime does.
public enum ImageUser {
    public struct Resolved: Sendable, Equatable {
        public var uid: UInt32
        public var gid: UInt32
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }

    public static func resolve(_ spec: String, passwd: String?, group: String?) throws -> Resolved {
        do {
            let account = try UserDatabase(passwd: passwd, group: group).resolve(spec)
            return Resolved(uid: account.uid, gid: account.gid)
        } catch let failure as UserDatabase.Failure {
            throw GuestError.unsupportedPath(spec, reason: "the image config's User cannot be resolved: \(failure); fix the image or use a numeric uid")
        }
    }
}

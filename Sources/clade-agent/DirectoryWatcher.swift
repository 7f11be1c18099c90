#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CladeGuestProtocol

/// `watch`: streams inotify events under a directory (and, when recursive, under every
/// subdirectory, including ones made later) to a connection until it closes.
enum DirectoryWatcher {
    static let mask = UInt32(IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF)

    static func start(_ request: AgentRequest, on connection: Connection) throws {
        let root = try FileOperations.path(request)
        guard try FileOperations.entry(at: root).type == .directory else { throw CommandError(description: "\(root) is not a directory") }
        let fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw FileOperations.failure("watch", root) }
        let recursive = request.recursive == true
        var directories: [Int32: String] = [:]
        func add(_ directory: String) {
            let descriptor = inotify_add_watch(fd, directory, mask)
            if descriptor >= 0 { directories[descriptor] = directory }
            guard recursive else { return }
            for name in (try? FileOperations.childNames(of: directory)) ?? [] {
                let child = FileOperations.join(directory, name)
                if (try? FileOperations.entry(at: child).type) == .directory { add(child) }
            }
        }
        add(root)
        guard !directories.isEmpty else {
            close(fd)
            throw FileOperations.failure("watch", root)
        }
        var watching = AgentResponse(id: request.id)
        watching.event = .watching
        watching.path = root
        connection.send(watching)
        let requestID = request.id
        let watched = directories
        startThread {
            var directories = watched
            // Cookies of renames away from staging files: the matching arrival is an upload landing.
            var landing: [UInt32: String] = [:]
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while !connection.isClosed {
                var pending = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
                if poll(&pending, 1, 250) <= 0 { continue }
                let count = read(fd, &buffer, buffer.count)
                if count <= 0 { continue }
                var offset = 0
                while offset + 16 <= count {
                    let descriptor = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int32.self) }
                    let eventMask = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self) }
                    let cookie = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self) }
                    let nameLength = Int(buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self) })
                    let nameBytes = buffer[(offset + 16)..<min(count, offset + 16 + nameLength)].prefix { $0 != 0 }
                    offset += 16 + nameLength
                    guard let directory = directories[descriptor] else { continue }
                    let name = String(decoding: nameBytes, as: UTF8.self)
                    let path = name.isEmpty ? directory : FileOperations.join(directory, name)
                    if eventMask & UInt32(IN_IGNORED) != 0 { directories.removeValue(forKey: descriptor); continue }
                    if recursive, eventMask & UInt32(IN_ISDIR) != 0, eventMask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 {
                        let added = inotify_add_watch(fd, path, mask)
                        if added >= 0 { directories[added] = path }
                    }
                    if StagedUploads.isStaging(name) {
                        if eventMask & UInt32(IN_MOVED_FROM) != 0 {
                            // Staging files moved elsewhere never land here: keep the map small.
                            if landing.count > 1024 { landing.removeAll() }
                            landing[cookie] = path
                        }
                        continue
                    }
                    guard var operations = operationName(eventMask).map({ [$0] }) else { continue }
                    if eventMask & UInt32(IN_MOVED_TO) != 0, let staging = landing.removeValue(forKey: cookie) {
                        operations = StagedUploads.targetExisted(staging: staging) ? ["write"] : ["create", "write"]
                    }
                    if name.isEmpty && operations != ["remove"] { continue }
                    for operation in operations {
                        var event = AgentResponse(id: requestID)
                        event.event = .fs
                        event.operation = operation
                        event.path = path
                        if operation != "remove" { event.entry = try? FileOperations.entry(at: path) }
                        if !connection.send(event) { return }
                    }
                }
            }
        }
    }

    static func operationName(_ mask: UInt32) -> String? {
        if mask & UInt32(IN_CREATE) != 0 { return "create" }
        if mask & UInt32(IN_MODIFY) != 0 { return "write" }
        if mask & UInt32(IN_DELETE | IN_DELETE_SELF) != 0 { return "remove" }
        if mask & UInt32(IN_MOVED_FROM | IN_MOVED_TO) != 0 { return "rename" }
        if mask & UInt32(IN_ATTRIB) != 0 { return "chmod" }
        return nil
    }
}

import CladeStore
import Foundation
import SwiftProtobuf

/// Which process of the pod a request names: a container's own (`exec` empty) or one of its execs.
struct ProcessKey: Hashable, Sendable, CustomStringConvertible {
    var container: String
    var exec: String

    var description: String { exec.isEmpty ? container : "\(container)/\(exec)" }

    /// The agent's tag for the process: at most 128 bytes, unique in the pod.
    var agentTag: String {
        let tag = exec.isEmpty ? "ctr-\(container)" : "ctr-\(container)-exec-\(exec)"
        guard tag.utf8.count > 128 else { return tag }
        return "ctr-" + Digest.of(Data(tag.utf8)).hex
    }
}

/// One process the shim answers for, and its state as containerd sees it.
struct ShimProcess: Sendable {
    enum Status: Sendable {
        case created, running, paused, stopped

        var wire: Containerd_V1_Types_Status {
            switch self {
            case .created: return .created
            case .running: return .running
            case .paused: return .paused
            case .stopped: return .stopped
            }
        }
    }

    var key: ProcessKey
    var spec: RuntimeProcess
    var bundle: String
    var terminal: Bool
    var stdin: String
    var stdout: String
    var stderr: String
    /// False for a CRI sandbox container: the VM is its process, and nothing runs for it in the guest.
    var runsInGuest: Bool
    /// The container's own root inside the guest (`clade.dev/container-root: image`); nil: the VM's.
    var root: String?
    var status: Status = .created
    var exitStatus: UInt32 = 0
    var exitedAt: Date?
    var io: ProcessIO?
}

extension Date {
    var protobufTimestamp: Google_Protobuf_Timestamp { Google_Protobuf_Timestamp(date: self) }
}

extension Google_Protobuf_Any {
    /// `message` packed the way containerd's typeurl registry names types: the bare full name
    /// (`containerd.events.TaskExit`), with no `type.googleapis.com/` prefix.
    init(bare message: some SwiftProtobuf.Message) throws {
        self.init()
        typeURL = type(of: message).protoMessageName
        value = try message.serializedData()
    }
}

import CladeQEMU
import CladeVMM

/// The one place that names a hypervisor: the backend an engine uses unless told otherwise.
public enum DefaultBackend {
    public static func make() -> any VMBackend { QEMUDriver() }
}

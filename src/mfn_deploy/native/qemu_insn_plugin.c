/*
 * qemu TCG plugin: count executed guest instructions (qemu-user).
 *
 *   gcc -shared -fPIC -O2 -o qemu_insn_plugin.so src/mfn_deploy/native/qemu_insn_plugin.c
 *   OMP_WAIT_POLICY=PASSIVE qemu-aarch64 -plugin ./qemu_insn_plugin.so,outfile=count.txt ./mfn-bench ...
 *
 * Writes "insns <N>" to outfile, or to stderr without it.
 * Each translated block gets an execution callback that adds the block's
 * instruction count. A block left early (fault, syscall exit) still counts
 * in full; that is deterministic, so it cancels in run-to-run differences.
 *
 * Debian bookworm's qemu-user (7.2) supports -plugin but no package ships
 * qemu-plugin.h (apt-file finds no match), so the few declarations needed
 * from qemu's public plugin API (include/qemu/qemu-plugin.h, API version 1,
 * which the 7.2 loader accepts) are written out here.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---- from qemu's stable public plugin API (qemu-plugin.h, version 1) ---- */
#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
/* ------------------------------------------------------------------------- */

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t insn_count;
static const char *outfile;

/* A callback with an atomic add rather than qemu's inline add: guest threads
 * run as parallel vCPUs in qemu-user, and the inline op is not atomic. */
static void on_tb_exec(unsigned int vcpu_index, void *n_insns)
{
    (void)vcpu_index;
    __atomic_fetch_add(&insn_count, (uint64_t)(uintptr_t)n_insns, __ATOMIC_RELAXED);
}

static void on_tb_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    uintptr_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)n);
}

static void on_qemu_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    char line[64];
    snprintf(line, sizeof(line), "insns %" PRIu64 "\n", __atomic_load_n(&insn_count, __ATOMIC_RELAXED));
    /* qemu_plugin_outs() would be silent unless qemu runs with -d plugin. */
    FILE *fp = outfile ? fopen(outfile, "w") : NULL;
    fputs(line, fp ? fp : stderr);
    if (fp)
        fclose(fp);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "outfile=", 8) == 0) {
            outfile = argv[i] + 8;
        } else {
            fprintf(stderr, "qemu_insn_plugin: unknown argument '%s' (only outfile=PATH)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_translate);
    qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
    return 0;
}

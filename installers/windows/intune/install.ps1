<#
.SYNOPSIS
  Intune Win32 app install command for Governor (runs as SYSTEM).
.DESCRIPTION
  Installs (or upgrades) the MSI next to this script silently, optionally
  writes the two settings most orgs set into the policy key
  HKLM\SOFTWARE\Policies\Governor\Governor (every other setting comes from the
  Governor.admx policy), then starts agent and tray for the user logged on at
  the console, if any. Exit code: msiexec's (0, or 3010 = reboot pending).
.EXAMPLE
  powershell.exe -NoProfile -ExecutionPolicy Bypass -File install.ps1 -ControlPlaneUrl https://langwatch.example.com -EnrollmentOrg example-corp
#>
param(
    [string]$ControlPlaneUrl = "",
    [string]$EnrollmentOrg = ""
)
$ErrorActionPreference = "Stop"

$msi = Get-ChildItem -Path $PSScriptRoot -Filter "governor-*-x64.msi" | Sort-Object Name | Select-Object -Last 1
if (-not $msi) { Write-Error "governor-*-x64.msi not found next to install.ps1"; exit 1603 }

$log = Join-Path $env:ProgramData "Governor\install.log"
New-Item -ItemType Directory -Force -Path (Split-Path $log) | Out-Null
$arguments = @("/i", "`"$($msi.FullName)`"", "/qn", "/norestart", "/l*v", "`"$log`"")
if ($ControlPlaneUrl) { $arguments += "CONTROL_PLANE_URL=`"$ControlPlaneUrl`"" }
if ($EnrollmentOrg) { $arguments += "ENROLLMENT_ORG=`"$EnrollmentOrg`"" }
$process = Start-Process -FilePath "msiexec.exe" -ArgumentList $arguments -Wait -PassThru
if ($process.ExitCode -ne 0 -and $process.ExitCode -ne 3010) { exit $process.ExitCode }

# Start agent and tray for the interactive user now (the HKLM Run key covers every later logon).
$installDir = (Get-ItemProperty -Path "HKLM:\SOFTWARE\Governor\Governor" -Name InstallDir -ErrorAction SilentlyContinue).InstallDir
$user = (Get-CimInstance -ClassName Win32_ComputerSystem).UserName
if ($installDir -and $user) {
    $exe = Join-Path $installDir "governorw.exe"
    foreach ($command in @("run", "tray")) {
        $name = "GovernorStart-$command"
        $action = New-ScheduledTaskAction -Execute $exe -Argument $command
        $principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive
        Register-ScheduledTask -TaskName $name -Action $action -Principal $principal -Force | Out-Null
        Start-ScheduledTask -TaskName $name
        Start-Sleep -Seconds 1
        Unregister-ScheduledTask -TaskName $name -Confirm:$false
    }
}
exit $process.ExitCode
